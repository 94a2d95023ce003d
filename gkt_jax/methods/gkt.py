"""GKT, group knowledge training (Tang et al., AAAI 2024), our reading (see docs/methods/gkt.md).

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
from gkt_jax.config.method import GKTSettings
from gkt_jax.methods.base import Method
from gkt_jax.methods.subnet_distillation import SelfDistillation

SAMPLERS = masks.SAMPLERS
AGGREGATES = groups.AGGREGATES


class GKT(SelfDistillation, Method):
  name = 'gkt'
  Settings = GKTSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    settings = self.settings
    self.levels, self.loops = settings.levels, settings.loops
    self.sampler, self.aggregate, self.momentum = (settings.sampler, settings.aggregate,
                                                   settings.momentum)
    # (GKT's 'prefix' sampler takes no max_shortening: not a GKT field.)
    self.sampler_kw = {name: float(getattr(settings, name))
                       for name in masks.SAMPLER_KWARGS[self.sampler] if hasattr(settings, name)}

  def sample_masks(self, key) -> jax.Array:
    """bool[loops * levels, L]: `loops` nested chains, each starting from the full net."""
    keys = jax.random.split(key, self.loops)
    chains = jax.vmap(lambda k: masks.sample_nested_subnets(
        k, self.stage_sizes, self.levels, sampler=self.sampler, **self.sampler_kw))(keys)
    return chains.reshape(self.loops * self.levels, self.num_blocks)
