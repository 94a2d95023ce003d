"""Stimulative training (Ye et al., NeurIPS 2022) and its ST++ switches.

Each step: the full network learns from the labels; `n_sub` subnets, each keeping a random
prefix of every stage (`masks.sample_subnet(sampler='prefix')`), independently drawn from the
full network, learn from its detached logits with T^2 KL. ST++ switches (all config fields):
`normalize_logits`, `n_sub = 6`, `subnet_resize` (bilinear, one side per subnet from
`resize_buckets` sides spread over [resize_min_scale * side, side]: a bucketed stand-in for
the continuous sizes of the spec, since a jitted step needs static shapes), and
`bn_recalibration_images` (the trainer recalibrates BatchNorm before evaluation).
`kl_weight = 0` gives the authors' "common training" control. BatchNorm running statistics:
`bn_stats` ('full_network' by default; 'every_pass' is what the authors' code does), see
subnet_distillation.py.
"""

from __future__ import annotations


import jax

from gkt_jax import masks
from gkt_jax.config.method import StimulativeSettings
from gkt_jax.methods.base import Method
from gkt_jax.methods.subnet_distillation import SelfDistillation


class Stimulative(SelfDistillation, Method):
  name = 'stimulative'
  Settings = StimulativeSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    self.levels = 1
    self.n_sub = self.settings.n_sub
    shortening = self.settings.max_shortening
    self.sampler_kw = {} if shortening is None else {'max_shortening': tuple(shortening)}

  def sample_masks(self, key) -> jax.Array:
    keys = jax.random.split(key, self.n_sub)
    return jax.vmap(lambda k: masks.sample_subnet(
        k, self.stage_sizes, sampler='prefix', **self.sampler_kw))(keys)
