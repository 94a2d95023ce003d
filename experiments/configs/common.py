"""Pieces the experiment configs share: argument parsing, the method and run sections, the
evaluator set, the small datasets' recipes, the ResKD chain, and configs by name.

Each dataset file (digits.py, fashion_mnist.py, cifar.py, imagenet.py) takes `method=NAME`
and says what it runs; a method's defaults come from its settings class
(gkt_jax/config/method.py). `get_config(method, dataset, arg)` returns a config by name.
Nothing here imports JAX or Flax.
"""

from __future__ import annotations

import importlib

import ml_collections
from ml_collections.config_dict import placeholder

from gkt_jax.config import method as method_config
from gkt_jax.config import model as model_config
from gkt_jax.config import names
from gkt_jax.config import optim as optim_config
from gkt_jax.config import run as run_config


def method_fields(method: str) -> dict:
  """The `config.method` defaults of a method (gkt_jax/config/method.py)."""
  return method_config.defaults(method)


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses a config argument 'key=value,flag,...' (big_vision style) against `defaults`.

  A bare `flag` sets a boolean default to True; values take the type of their default
  (str when the default is None). Unknown keys raise a ValueError naming the allowed ones.
  """
  out = dict(defaults)
  for token in filter(None, (arg or '').split(',')):
    key, has_value, value = token.partition('=')
    if key not in defaults:
      raise ValueError(f'config argument {token!r} (in {arg!r}): unknown key {key!r}; '
                       f'allowed: {sorted(defaults)}')
    default = defaults[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {token!r}: {key} needs a value ({key}=...)')
      out[key] = True
    elif isinstance(default, bool):
      if value not in ('True', 'False', 'true', 'false', '1', '0'):
        raise ValueError(f'config argument {token!r}: {key} is a boolean')
      out[key] = value in ('True', 'true', '1')
    elif default is None:
      out[key] = value
    else:
      try:
        out[key] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {token!r}: {key} must be of type '
                         f'{type(default).__name__}') from None
  return out


def options(arg: str | None, **defaults) -> dict:
  """A dataset file's arguments: method (a registered method's name), arch (a registered
  network's name), smoke, stpp (stimulative training only), drop_path (stochastic depth
  only), pruned_depth (`finish`) and the file's own `defaults`."""
  out = parse_arg(arg, **dict(dict(method='gkt', arch='resnet20', smoke=False, stpp=False,
                                   drop_path=False, pruned_depth=False), **defaults))
  if out['method'] not in method_config.METHODS or out['method'] in CHAIN_METHODS:
    raise ValueError(f"config argument method={out['method']!r} is not one of "
                     f'{tuple(m for m in method_config.METHODS if m not in CHAIN_METHODS)}')
  if out['arch'] not in model_config.ARCHITECTURES:
    raise ValueError(f"config argument arch={out['arch']!r} is not one of "
                     f'{tuple(model_config.ARCHITECTURES)}')
  if out['stpp'] and out['method'] != 'stimulative':
    raise ValueError(f"config argument stpp: ST++ is stimulative training's (method="
                     f"{out['method']!r})")
  if out['drop_path'] and out['method'] != 'stochastic_depth':
    raise ValueError(f"config argument drop_path: a setting of stochastic depth (method="
                     f"{out['method']!r})")
  return out


# ST++'s switches (stimulative_training.md); ResNet-50 also takes its inter-stage rule.
STPP = dict(normalize_logits=True, n_sub=6, subnet_resize=True, bn_recalibration_images=2000)
STPP_RESNET50_MAX_SHORTENING = (1, 2, 4, 1)
# Stochastic depth as DeiT's DropPath (stochastic_depth.md): per-example bits, inverted
# scaling; a ViT's stochastic depth runs it, another network with the `drop_path` argument.
DROP_PATH = dict(granularity='example', test_scaling=False)


def base(options: dict, optim: dict) -> ml_collections.ConfigDict:
  """Seed 0, the method's section (with ST++'s switches when `options['stpp']`), `optim`
  and the run's own fields; the file adds data, model, durations and evaluators."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = method_fields(options['method'])
  if options['stpp']:
    config.method.update(STPP)
  if options['method'] == 'stochastic_depth' and (
      options['drop_path'] or model_config.family(options['arch']) == 'vit'):
    config.method.update(DROP_PATH)
  config.optim = optim
  for prefix in run_config.DURATION_PREFIXES:  # the file sets one of each pair it uses
    config[f'{prefix}_steps'] = placeholder(int)
    config[f'{prefix}_epochs'] = placeholder(float)
  config.update(run_config.RunSettings.defaults())
  return config


def sgd(**fields) -> dict:
  """An SGD section: the config's fields over the optimiser's others (momentum 0.9, ...)."""
  return optim_config.section_defaults(**fields)


def adamw(**fields) -> dict:
  """An AdamW section: the config's fields over AdamW's others (b1, b2, eps, ...)."""
  return optim_config.section_defaults(optim_config.ADAMW_FIELDS, optimizer='adamw', **fields)


# The small datasets' optimisers (digits, Fashion-MNIST): every method and network trains
# with the same one, so runs compare; a ViT with AdamW after a warm-up, as ViTs train.
SMALL_SGD = sgd(lr=0.1, weight_decay=5e-4, schedule='cosine')
SMALL_VIT_ADAMW = adamw(lr=1e-3, weight_decay=0.05, warmup_steps=100, schedule='cosine')


def small_optim(arch: str) -> dict:
  """SMALL_VIT_ADAMW for a ViT, else SMALL_SGD."""
  return dict(SMALL_VIT_ADAMW if model_config.family(arch) == 'vit' else SMALL_SGD)


def data_options(**options) -> dict:
  """A data section's `options`: `train_examples_per_class` unset (the whole train split)
  and the dataset's own."""
  return dict(train_examples_per_class=placeholder(int), **options)


def model(arch: str, vit_patch_size: int | None = None, **fields) -> dict:
  """A model section: a ResNet at width 1 with pad shortcuts; another network's defaults; a
  ViT's `patch_size` is `vit_patch_size` (None: the network's rule by input side)."""
  family = model_config.family(arch)
  if family == 'resnet':
    return dict(dict(arch=arch, width_multiplier=1.0, shortcut='pad', conv_impl='auto'),
                **fields)
  if family == 'vit':
    fields = dict(patch_size=vit_patch_size or placeholder(int), **fields)
  return dict(arch=arch, conv_impl='auto', **fields)


def levels(config: ml_collections.ConfigDict):
  """The subnet evaluators' levels: method.levels itself (a FieldReference, so that
  --config.method.levels=4 reaches the evaluators too), else names.DEFAULT_LEVELS."""
  return (config.method.get_ref('levels') if 'levels' in config.method
          else names.DEFAULT_LEVELS)


def evals(levels: int = names.DEFAULT_LEVELS, num_chains: int = 8, depth_subnets: int = 16,
          deletion: bool = True, method: str | None = None) -> dict:
  """The evaluators: full network every evaluation; at the end only, subnets (nested chains
  of GKT's sampler, and accuracy by kept blocks over prefix and over nested subnets), single
  block deletion, and the method's own (`method_config.OWN_EVALS`)."""
  out = {
      'full': dict(type='full'),
      'subnet_chains': dict(type='subnet_chains', final_only=True, num_chains=num_chains,
                            levels=levels, sampler='bernoulli', drop_prob=0.2, seed=0),
      'depth_curve': dict(type='depth_curve', final_only=True, num_subnets=depth_subnets,
                          sampler='prefix', seed=1),
      # The same depth curve over GKT's nested subnets: every method on both samplers.
      'nested_depth_curve': dict(type='nested_depth_curve', final_only=True,
                                 num_chains=num_chains, levels=levels, sampler='bernoulli',
                                 drop_prob=0.2, seed=2),
  }
  if deletion:
    out['block_deletion'] = dict(type='block_deletion', final_only=True)
  out.update(method_config.OWN_EVALS.get(method, {}))
  return out


def config_evals(config: ml_collections.ConfigDict, **kwargs) -> dict:
  """`evals(**kwargs)` at the config's levels, with its method's own evaluators."""
  return evals(levels(config), method=config.method.name, **kwargs)


# LayerDrop's pruning rule (every other droppable block) as an evaluator entry: the
# `pruned_depth` argument of every config file, and suites with `pruned_depth=True`.
PRUNED_DEPTH_EVAL = names.PRUNED_DEPTH_EVAL


def finish(config: ml_collections.ConfigDict, options: dict) -> ml_collections.ConfigDict:
  """The last step of every config file: the evaluators its arguments add (pruned_depth:
  accuracy with every other droppable block pruned)."""
  if options['pruned_depth']:
    config.evals.pruned_depth = dict(PRUNED_DEPTH_EVAL)
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """4 steps, logged and evaluated every 2, with few subnets per evaluator."""
  for prefix in ('total', 'log_every', 'eval_every'):
    config[f'{prefix}_epochs'] = None
  config.total_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 2
  config.evals = config_evals(config, num_chains=2, depth_subnets=3, deletion=False)


# Named variants of the methods, label: (method, fields over its defaults): the rows of the
# results suites (experiments/reproduce.py) and of the step benchmark (bench_step).
VARIANTS = {
    'baseline': ('baseline', {}),
    'stochastic_depth': ('stochastic_depth', {}),
    'drop_path': ('stochastic_depth', dict(DROP_PATH)),
    'layerdrop': ('layerdrop', {}),
    'stimulative': ('stimulative', {}),
    'stimulative_stpp': ('stimulative', dict(STPP)),
    'gkt': ('gkt', {}),
    'gkt_geometric': ('gkt', {'sampler': 'geometric'}),
    'sandwich': ('sandwich', {}),
    'ekd_fws': ('ekd_fws', {}),
    # The BatchNorm ablation: running statistics updated by every pass (the authors' loops).
    'stimulative_every_pass': ('stimulative', {'bn_stats': 'every_pass'}),
    'gkt_every_pass': ('gkt', {'bn_stats': 'every_pass'}),
}

# The config file of each dataset, and the argument that picks the dataset where one file
# serves several.
_FILES = {'digits': ('digits', ''), 'fashion_mnist': ('fashion_mnist', ''),
          'cifar10': ('cifar', 'dataset=cifar10'), 'cifar100': ('cifar', 'dataset=cifar100'),
          'imagenet2012': ('imagenet', '')}
DATASETS = tuple(_FILES)
# Methods that run as stages of a ResKD chain (reskd_chain.py), not on their own.
CHAIN_METHODS = ('kd', 'reskd')


def get_config(method: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of `dataset`'s file for `method` with the further argument `arg` (see the
  file's docstring). A ResKD chain stage ('kd', 'reskd') runs on the baseline's config with
  its own method section."""
  if method in CHAIN_METHODS:
    config = get_config('baseline', dataset, arg)
    config.method = method_fields(method)
    return config
  if method not in method_config.METHODS:
    raise ValueError(f'method={method!r} is not one of {tuple(method_config.METHODS)}')
  if dataset not in _FILES:
    raise ValueError(f'dataset={dataset!r}: no config file; datasets with config files: '
                     f'{DATASETS}')
  name, dataset_arg = _FILES[dataset]
  file = importlib.import_module(f'experiments.configs.{name}')
  return file.get_config(','.join(filter(None, (f'method={method}', dataset_arg, arg))))


def run_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The run configs in a config file's config: itself, or a ResKD chain's stages."""
  if 'num_res_students' in config:
    return [config.teacher, config.student, config.res_student]
  return [config]
