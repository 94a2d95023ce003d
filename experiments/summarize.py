r"""A markdown table (and one depth-accuracy plot) from the summary.json of finished runs.

  python -m experiments.summarize workdirs/fmnist_* [--plot docs/fmnist_depth_accuracy.png]

Times are relative to the run whose method is 'baseline' among the workdirs given.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

_PLOT = flags.DEFINE_string('plot', None, 'Write accuracy vs kept blocks of every run here.')


def load(workdirs: list[str]) -> list[dict]:
  runs = []
  for workdir in workdirs:
    path = os.path.join(workdir, 'summary.json')
    if not os.path.exists(path):
      raise SystemExit(f'error: {path} does not exist (is the run finished?)')
    with open(path) as f:
      runs.append(dict(json.load(f), workdir=workdir))
  return runs


def table(runs: list[dict]) -> str:
  base = next((r for r in runs if r['method'] == 'baseline'), None)
  levels = max((int(k.removeprefix('subnet_acc/level')) for r in runs for k in r
                if k.startswith('subnet_acc/level')), default=0)
  head = (['method', 'full net (final)'] + [f'level-{g} subnets' for g in range(1, levels + 1)]
          + ['one block deleted', 's/step', 'time vs baseline', 'forwards/step'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in runs:
    cells = [r['method'], f'{r["full_accuracy"]:.4f}']
    cells += [f'{r[f"subnet_acc/level{g}"]:.4f}' if f'subnet_acc/level{g}' in r else ''
              for g in range(1, levels + 1)]
    cells.append(f'{r["block_deletion_mean"]:.4f}' if r.get('block_deletion_mean') else '')
    cells.append(f'{r["seconds_per_step"]:.3f}')
    cells.append(f'{r["train_seconds"] / base["train_seconds"]:.2f}x' if base else '')
    cells.append(str(r['forwards_per_step']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(runs: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in runs:
    if r.get('depth_curve'):
      kept, acc = zip(*[(c[0], c[1]) for c in r['depth_curve']])
      ax.plot(kept, acc, marker='o', label=r['method'])
  ax.set_xlabel('residual blocks kept (prefix subnets)')
  ax.set_ylabel('test accuracy')
  ax.set_title(f'{runs[0]["dataset"]}, {runs[0]["arch"]}: accuracy vs depth')
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  runs = load(argv[1:])
  if not runs:
    raise app.UsageError('give the workdirs of finished runs')
  print(table(runs))
  if _PLOT.value:
    plot(runs, _PLOT.value)
    print(f'wrote {_PLOT.value}')


if __name__ == '__main__':
  app.run(main)
