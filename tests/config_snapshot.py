"""The resolved JSON of every config file (its default and ':smoke' argument, and the argument
values its docstring names), of every results-suite cell and of every ResKD chain.

`python tests/config_snapshot.py` rewrites tests/goldens/configs.json; test_config_snapshot
compares against it, so that a refactor of the configuration keeps every run's config
byte-identical, and a deliberate change of a default shows in the golden's diff.
"""

import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, 'tests', 'goldens', 'configs.json')
# Arguments beyond the default and 'smoke', by dataset file.
EXTRA_ARGS = {
    'digits': ('arch=resnet8',),
    'fashion_mnist': ('arch=resnet56',),
    'cifar10': ('arch=resnet110', 'recipe=stochastic_depth', 'recipe=ekd_fws'),
    'cifar100': ('arch=resnet110', 'recipe=stochastic_depth', 'recipe=ekd_fws'),
    'imagenet': (),
}


def _json(config) -> str:
  return config.to_json_best_effort(sort_keys=True)


def snapshot() -> dict[str, str]:
  """{'method/file:arg' or 'suite/cell/seedK' or 'reskd/dataset:arg': resolved JSON}."""
  sys.path.insert(0, REPO)
  # pylint: disable=g-import-not-at-top
  import importlib
  from experiments import reproduce
  from experiments.configs import common
  out = {}
  for path in sorted(glob.glob(os.path.join(REPO, 'experiments', 'configs', '*', '*.py'))):
    method, name = path.split(os.sep)[-2], os.path.basename(path)[:-3]
    if name == '__init__':
      continue
    module = importlib.import_module(f'experiments.configs.{method}.{name}')
    dataset = name.split('_stpp')[0].split('_short')[0]
    extra = ('res=3,target=kd,student_features',) if method == 'reskd' else EXTRA_ARGS[dataset]
    for arg in (None, 'smoke') + extra:
      config = module.get_config(arg)
      for i, stage in enumerate(common.run_configs(config)):
        suffix = f'#{i}' if 'num_res_students' in config else ''
        out[f'{method}/{name}:{arg or ""}{suffix}'] = _json(stage)
  for suite_name, suite in reproduce.SUITES.items():
    for cell in reproduce.suite_cells(suite):
      for seed in reproduce.cell_seeds(suite, cell)[:1]:
        out[f'{suite_name}/{cell}/seed{seed}'] = _json(reproduce.run_config(suite, cell, seed))
  return out


if __name__ == '__main__':
  configs = snapshot()
  with open(GOLDEN, 'w') as f:
    json.dump(configs, f, indent=0, sort_keys=True)
    f.write('\n')
  print(f'wrote {GOLDEN}')
