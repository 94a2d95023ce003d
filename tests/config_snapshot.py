"""The resolved JSON of every config file (each method's default and ':smoke' argument, and the
argument values its docstring names), of every results-suite cell and of every ResKD chain.

`python tests/config_snapshot.py` rewrites tests/goldens/configs.json; test_config_snapshot
compares against it, so that a refactor of the configuration keeps every run's config
byte-identical, and a deliberate change of a default shows in the golden's diff.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, 'tests', 'goldens', 'configs.json')
METHODS = ('baseline', 'stochastic_depth', 'layerdrop', 'stimulative', 'gkt', 'sandwich',
           'ekd_fws')


def _arguments(method: str, extra: tuple[str, ...]) -> list[str]:
  return [f'method={method}{a}' for a in ('', ',smoke') + extra]


# The arguments of every config file: each method's default and ':smoke', and the values its
# docstring names.
ARGUMENTS = {
    'digits': [a for m in METHODS for a in _arguments(m, (',arch=resnet8',))],
    'fashion_mnist': [a for m in METHODS for a in _arguments(m, (',arch=resnet56',))]
                     + [f'method=stimulative,stpp{a}' for a in ('', ',smoke', ',arch=resnet56')]
                     + [f'method=gkt,short{a}' for a in ('', ',smoke', ',arch=resnet56')],
    'cifar': [f'dataset={d},{a}' for d in ('cifar10', 'cifar100') for m in METHODS
              for a in _arguments(m, (',arch=resnet110', ',recipe=stochastic_depth',
                                      ',recipe=ekd_fws'))],
    'imagenet': [a for m in ('gkt', 'stimulative') for a in _arguments(m, ())],
    'reskd_chain': [f'dataset={d}{a}' for d in ('digits', 'fashion_mnist')
                    for a in ('', ',smoke', ',res=3,target=kd,student_features')],
}


def _json(config) -> str:
  return config.to_json_best_effort(sort_keys=True)


def snapshot() -> dict[str, str]:
  """{'file:arg' (with '#stage' in a ResKD chain) or 'suite/cell/seedK': resolved JSON}."""
  sys.path.insert(0, REPO)
  # pylint: disable=g-import-not-at-top
  import importlib
  from experiments import reproduce
  from experiments.configs import common
  out = {}
  for name, arguments in ARGUMENTS.items():
    module = importlib.import_module(f'experiments.configs.{name}')
    for arg in arguments:
      config = module.get_config(arg)
      for i, stage in enumerate(common.run_configs(config)):
        suffix = f'#{i}' if 'num_res_students' in config else ''
        out[f'{name}:{arg}{suffix}'] = _json(stage)
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
