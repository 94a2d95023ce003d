"""Value sets shared by the settings classes and the code that uses them (samplers, BatchNorm
rules, model options), defined here so that reading a config needs no JAX."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gkt_jax import settings

# ----- subnet samplers (gkt_jax.masks) -----
SURVIVAL_RULES = ('linear', 'uniform')
# Stochastic depth's draw: one keep bit per block for the batch, or per example and block.
DROP_GRANULARITIES = ('batch', 'example')
SAMPLERS = ('prefix', 'bernoulli', 'geometric')
# GKT's nested subnets per loop: its settings' default and the subnet evaluators'.
DEFAULT_LEVELS = 3
# The keyword arguments of each sampler (`masks.sample_subnet`).
SAMPLER_KWARGS = {
    'prefix': ('max_shortening',),
    'bernoulli': ('drop_prob',),
    'geometric': ('gamma',),
}
# Their checks, for the settings and evaluator configs that hold them. gamma is the ratio
# of P(k) ∝ gamma^k, not a probability.
SAMPLER_CHECKS = {
    'max_shortening': settings.optional(settings.positive_ints),
    'drop_prob': settings.probability,
    'gamma': settings.positive,
}


def check_max_shortening(field: str, value: Any, stage_sizes: Sequence[int]) -> None:
  """The prefix sampler's inter-stage rule against a network: one M_s <= n_s per stage."""
  if value is None:
    return
  stage_sizes = tuple(stage_sizes)
  if len(value) != len(stage_sizes) or any(m > n for m, n in zip(value, stage_sizes)):
    settings.fail(field, value, f'one M_s per stage with 1 <= M_s <= n_s; the stage sizes '
                  f'are {stage_sizes}')


# ----- evaluators -----
# LayerDrop's pruning at inference, every other droppable block (gkt_jax.evaluate's
# 'pruned_depth'): LayerDrop's own evaluator, and any config's with its `pruned_depth` argument.
PRUNED_DEPTH_EVAL = {'type': 'pruned_depth', 'final_only': True, 'periods': (2,)}

# ----- methods -----
AGGREGATES = ('ema', 'mean')  # how group knowledge aggregates over loops (gkt_jax.groups)
BN_STATS = ('full_network', 'every_pass')  # which passes update BatchNorm statistics
RESIDUAL_TARGETS = ('logits', 'kd')  # what a ResKD res-student learns

# ----- models -----
CONV_IMPLS = ('auto', 'xla', 'canonical')
SHORTCUTS = ('projection', 'pad')
# How the parameter-free 'pad' shortcut of a downsampling block shrinks its input.
PAD_DOWNSAMPLES = ('subsample', 'avgpool')
MASKED_SAVES = ('conv_outputs', 'nothing', 'all')
# False/True also by name ('none'/'barrier'), for config files and flags, where a field keeps
# the type of its first value.
BLOCK_BARRIERS = ('auto', True, False, 'cond', 'none', 'barrier')
STEMS = ('cifar', 'imagenet')
