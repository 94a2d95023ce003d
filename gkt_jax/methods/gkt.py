"""GKT, group knowledge training (Tang et al., AAAI 2024), our reading (see methods/gkt.md).

Each step: the full network learns from the labels; `loops` times, a chain of `levels`
nested subnets is sampled from the full network (each a subnet of the one before, by the
'bernoulli' or 'geometric' child sampler); the subnet at level g learns (T^2 KL, weight
`kl_weight`) from the knowledge of level g-1, and its detached logits are aggregated into
level g's knowledge (an EMA with `momentum` over loops, or a running mean). Level 0's
knowledge is the full network's detached logits. Every guessed choice is a config field.
BatchNorm running statistics: `bn_stats` ('full_network' by default; 'every_pass' is what
the authors' PyTorch loops do), see subnet_distillation.py.
"""

from __future__ import annotations

import jax

from gkt_jax import groups, masks
from gkt_jax.methods.base import Method
from gkt_jax.methods.subnet_distillation import SelfDistillation

SAMPLERS = masks.SAMPLERS
AGGREGATES = groups.AGGREGATES


class GKT(SelfDistillation, Method):
  name = 'gkt'
  config_fields = (Method.config_fields + SelfDistillation.config_fields
                   + ('levels', 'loops', 'sampler', 'drop_prob', 'gamma', 'aggregate',
                      'momentum'))

  def __init__(self, config, model):
    super().__init__(config, model)
    self.levels = int(config.get('levels', 3))
    self.loops = int(config.get('loops', 2))
    for field, value in (('levels', self.levels), ('loops', self.loops)):
      if value < 1:
        raise ValueError(f'method.{field}={value} must be >= 1')
    self.sampler = config.get('sampler', 'bernoulli')
    if self.sampler not in SAMPLERS:
      raise ValueError(f'method.sampler={self.sampler!r} is not one of {SAMPLERS}')
    self.aggregate = config.get('aggregate', 'ema')
    if self.aggregate not in AGGREGATES:
      raise ValueError(f'method.aggregate={self.aggregate!r} is not one of {AGGREGATES}')
    self.momentum = float(config.get('momentum', 0.5))
    if self.sampler == 'bernoulli':
      self.sampler_kw = {'drop_prob': float(config.get('drop_prob', 0.2))}
    elif self.sampler == 'geometric':
      self.sampler_kw = {'gamma': float(config.get('gamma', 0.5))}
    else:
      self.sampler_kw = {}

  def sample_masks(self, key) -> jax.Array:
    """bool[loops * levels, L]: `loops` nested chains, each starting from the full net."""
    keys = jax.random.split(key, self.loops)
    chains = jax.vmap(lambda k: masks.sample_nested_subnets(
        k, self.stage_sizes, self.levels, sampler=self.sampler, **self.sampler_kw))(keys)
    return chains.reshape(self.loops * self.levels, self.num_blocks)
