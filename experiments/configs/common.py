"""Shared pieces of the experiment configs: datasets, optimiser recipes, method defaults."""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

# Method defaults (the specs in shared/methods/); every guessed GKT choice is a field.
METHODS = {
    'baseline': dict(name='baseline'),
    'stochastic_depth': dict(name='stochastic_depth', final_survival=0.5, rule='linear',
                             test_scaling=True),
    'stimulative': dict(name='stimulative', n_sub=1, temperature=1.0, kl_weight=1.0,
                        max_shortening=placeholder(tuple), normalize_logits=False, subnet_resize=False,
                        resize_min_scale=0.43, resize_buckets=4, subnet_label_weight=0.0,
                        bn_recalibration_images=0),
    'gkt': dict(name='gkt', levels=3, loops=2, sampler='bernoulli', drop_prob=0.2, gamma=0.5,
                aggregate='ema', momentum=0.5, temperature=1.0, kl_weight=1.0,
                subnet_label_weight=0.0, normalize_logits=False),
}


def evals(levels: int = 3, num_chains: int = 8, depth_subnets: int = 16,
          deletion: bool = True) -> dict:
  """The standard evaluators: full network every eval; subnets at the end only."""
  out = {
      'full': dict(type='full'),
      'subnet_chains': dict(type='subnet_chains', final_only=True, num_chains=num_chains,
                            levels=levels, sampler='bernoulli', drop_prob=0.2, seed=0),
      'depth_curve': dict(type='depth_curve', final_only=True, num_subnets=depth_subnets,
                          sampler='prefix', seed=1),
  }
  if deletion:
    out['block_deletion'] = dict(type='block_deletion', final_only=True)
  return out


def get_config(method: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """A full config for `method` on `dataset` ('digits' or 'fashion_mnist').

  arg: None, or 'smoke' for a few steps (tests, quick checks).
  """
  if method not in METHODS:
    raise ValueError(f'method={method!r} is not one of {tuple(METHODS)}')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = dict(METHODS[method], label_smoothing=0.0)
  config.optim = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      schedule='cosine', warmup_steps=0, step_boundaries=(0.5, 0.75),
                      step_factor=0.1)
  # Durations: set *_steps or *_epochs (one of each pair); placeholders can be overridden.
  for prefix in ('total', 'log_every', 'eval_every'):
    config[f'{prefix}_steps'] = placeholder(int)
    config[f'{prefix}_epochs'] = placeholder(float)
  if dataset == 'digits':
    # 8x8 images: ResNet-20 runs its stages at 8x8, 4x4 and 2x2.
    config.data = dict(name='digits', dir=placeholder(str), batch_size=64, eval_batch_size=400,
                       augment=dict(pad=1, flip=False))
    config.model = dict(arch='resnet20', width_multiplier=1.0, shortcut='pad',
                        conv_impl='auto')
    config.total_epochs = 30
    config.log_every_epochs = 3
    config.eval_every_epochs = 10
  elif dataset == 'fashion_mnist':
    config.data = dict(name='fashion_mnist', dir=placeholder(str), batch_size=128, eval_batch_size=500,
                       augment=dict(pad=2, flip=True))
    config.model = dict(arch='resnet20', width_multiplier=1.0, shortcut='pad',
                        conv_impl='auto')
    # A short schedule that fits 2 CPU cores (see README); longer: --config.total_epochs=N.
    config.total_epochs = 3
    config.log_every_steps = 100
    config.eval_every_epochs = 1
  else:
    raise ValueError(f'dataset={dataset!r} is not one of (\'digits\', \'fashion_mnist\')')
  if dataset == 'fashion_mnist':  # 10k test images per subnet pass: fewer subnets.
    config.evals = evals(levels=config.method.get('levels', 3), num_chains=4, depth_subnets=8)
  else:
    config.evals = evals(levels=config.method.get('levels', 3))
  config.plots = True
  config.verbose = True
  if arg == 'smoke':
    config.total_epochs = None
    config.log_every_epochs = None
    config.eval_every_epochs = None
    config.total_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 2
    config.evals = evals(levels=config.method.get('levels', 3), num_chains=2,
                         depth_subnets=3, deletion=False)
  elif arg:
    raise ValueError(f'config argument {arg!r} is not one of (None, \'smoke\')')
  return config
