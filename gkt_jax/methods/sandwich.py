"""The sandwich rule with in-place distillation (Yu and Huang, ICCV 2019; BigNAS, Yu et
al., ECCV 2020), applied to depth.

Each step: the full network (the largest) learns from the labels; the smallest subnet (the
blocks no sampler drops: the first of every stage) and `n_random` random subnets
(`masks.sample_sandwich`) learn from the full network's detached logits with T^2 KL. The
passes run in subnet distillation's one `lax.scan` (subnet_distillation.py): full network,
smallest, random ones. BatchNorm running statistics: `bn_stats` (subnet_distillation.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gkt_jax import masks
from gkt_jax.config.method import SandwichSettings
from gkt_jax.methods.base import Method
from gkt_jax.methods.subnet_distillation import SelfDistillation


class Sandwich(SelfDistillation, Method):
  name = 'sandwich'
  Settings = SandwichSettings

  def sample_masks(self, key) -> jax.Array:
    """bool[1 + n_random, L]: the smallest subnet, then the random ones (one level: each
    learns from the full network)."""
    return masks.sample_sandwich(key, self.stage_sizes, self.settings.n_random,
                                 sampler=self.settings.sampler,
                                 **self.settings.sampler_kwargs())

  def subnet_measurements(self, per_subnet: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """'{name}/smallest' (the smallest subnet's values) and '{name}/random' (the mean over
    the random subnets, when there are any)."""
    out = {f'{name}/smallest': values[0] for name, values in per_subnet.items()}
    if self.settings.n_random:
      out.update({f'{name}/random': jnp.mean(values[1:]) for name, values in per_subnet.items()})
    return out
