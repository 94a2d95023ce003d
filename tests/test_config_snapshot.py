"""Every config file's and suite cell's resolved JSON equals tests/goldens/configs.json
(written by tests/config_snapshot.py): refactors of the configuration change no run."""

import json

from absl.testing import absltest

import config_snapshot


def _flat(value, prefix=''):
  if isinstance(value, dict):
    out = {}
    for key, item in value.items():
      out.update(_flat(item, f'{prefix}.{key}' if prefix else key))
    return out
  return {prefix: value}


def differences(golden: str, current: str) -> list[str]:
  """'field: golden -> current' for every field that differs."""
  old, new = _flat(json.loads(golden)), _flat(json.loads(current))
  return [f'{k}: {old.get(k, "<absent>")!r} -> {new.get(k, "<absent>")!r}'
          for k in sorted(set(old) | set(new)) if old.get(k, '<absent>') != new.get(k, '<absent>')]


class ConfigSnapshotTest(absltest.TestCase):

  def test_every_resolved_config_is_unchanged(self):
    with open(config_snapshot.GOLDEN) as f:
      golden = json.load(f)
    current = config_snapshot.snapshot()
    self.assertEqual(sorted(current), sorted(golden), 'configs added or removed: rerun '
                     'tests/config_snapshot.py if that is meant')
    changed = {name: differences(golden[name], current[name]) for name in golden
               if golden[name] != current[name]}
    self.assertEmpty(changed, 'resolved configs changed (rerun tests/config_snapshot.py and '
                     'list the change in the commit if it is meant):\n' + '\n'.join(
                         f'{name}: {"; ".join(diffs)}' for name, diffs in changed.items()))

  def test_differences_name_each_changed_field(self):
    self.assertEqual(differences('{"a": {"b": 1, "c": 2}}', '{"a": {"b": 1, "c": 3, "d": 0}}'),
                     ['a.c: 2 -> 3', "a.d: '<absent>' -> 0"])


if __name__ == '__main__':
  absltest.main()
