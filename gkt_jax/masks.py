"""Subnet keep masks of residual networks: pure samplers `(key, ...) -> bool[..., L]`.

A network has `L = sum(stage_sizes)` residual blocks, numbered stage by stage. A subnet is a
keep mask bool[L] (`True` = the block runs). `stage_sizes` and the sampler name are static
Python values; keys, parents and depths may be traced, so one compiled program serves every
draw. Every function here is jit-able (`jax.jit(..., static_argnames=('stage_sizes', ...))`).

Samplers (see `methods/*.md`):
  * stochastic depth: an independent Bernoulli gate per block (`sample_stochastic_depth`).
  * 'prefix' (stimulative training): the first d_s blocks of every stage.
  * 'bernoulli', 'geometric' (GKT, our reading): a child that drops more of its parent's
    droppable blocks; `sample_nested_subnets` chains them.
  * the sandwich rule (Yu and Huang 2019, BigNAS): the smallest subnet, then random ones
    (`sample_sandwich`).
Droppable blocks are all but the first block of every stage (`droppable_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The samplers' names, keyword arguments and checks, and GKT's default level count.
from gkt_jax.config.names import (DEFAULT_LEVELS, SAMPLER_CHECKS, SAMPLER_KWARGS, SAMPLERS,
                                  SURVIVAL_RULES)
from gkt_jax.utils import with_variance_of


def _is_traced(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def _check_stage_sizes(stage_sizes: Sequence[int]) -> tuple[int, ...]:
  sizes = tuple(int(n) for n in stage_sizes)
  if not sizes or any(n < 1 for n in sizes):
    raise ValueError(f'stage_sizes={tuple(stage_sizes)} must be a non-empty sequence of '
                     'positive ints')
  return sizes


def _check_unit_interval(name: str, value: Any, *, open_low: bool = False) -> None:
  """Raises ValueError unless a concrete scalar `value` lies in [0, 1] ((0, 1] if open_low)."""
  if _is_traced(value):
    return
  x = float(value)
  low_ok = x > 0.0 if open_low else x >= 0.0
  if not (low_ok and x <= 1.0):
    interval = '(0, 1]' if open_low else '[0, 1]'
    raise ValueError(f'{name}={value!r} is outside the allowed interval {interval}')


def stochastic_depth_survival(num_blocks: int, final_survival: float = 0.5,
                              rule: str = 'linear') -> jax.Array:
  """Survival probabilities of stochastic depth (Huang et al., 2016).

  Args:
    num_blocks: L, the number of residual blocks (static int >= 1).
    final_survival: p_L, the survival probability of the last block, in [0, 1].
    rule: 'linear', p_i = 1 - (i / L) * (1 - p_L) for i = 1..L; or 'uniform', p_i = p_L.

  Returns:
    f32[L], the survival probability of every block.

  Raises:
    ValueError: for an unknown rule or a concrete final_survival outside [0, 1].
  """
  if rule not in SURVIVAL_RULES:
    raise ValueError(f'rule={rule!r} is not a survival rule; allowed: {SURVIVAL_RULES}')
  if int(num_blocks) < 1:
    raise ValueError(f'num_blocks={num_blocks!r} must be >= 1')
  _check_unit_interval('final_survival', final_survival)
  final_survival = jnp.asarray(final_survival, jnp.float32)
  if rule == 'uniform':
    return jnp.full((num_blocks,), final_survival, jnp.float32)
  i = jnp.arange(1, num_blocks + 1, dtype=jnp.float32)
  return 1.0 - (i / num_blocks) * (1.0 - final_survival)


def sample_stochastic_depth(key: jax.Array, survival: jax.Array) -> jax.Array:
  """Draws one stochastic-depth keep mask.

  Args:
    key: a typed PRNG key.
    survival: f32[L], the survival probability of every block.

  Returns:
    bool[L], block i kept with probability survival[i], independently.
  """
  survival = jnp.asarray(survival)
  return jax.random.bernoulli(key, survival, survival.shape)


def sample_drop_path(key: jax.Array, survival: jax.Array, batch_size: int) -> jax.Array:
  """Draws per-example stochastic-depth keep bits (DeiT's DropPath).

  Args:
    key: a typed PRNG key.
    survival: f32[L], the survival probability of every block.
    batch_size: B, the examples of the batch (static).

  Returns:
    bool[B, L], block i of example b kept with probability survival[i], every bit drawn
    independently.
  """
  survival = jnp.asarray(survival)
  return jax.random.bernoulli(key, survival, (batch_size,) + survival.shape)


def droppable_mask(stage_sizes: Sequence[int]) -> np.ndarray:
  """Which blocks a subnet sampler may drop (a static numpy array).

  Args:
    stage_sizes: (n_1, ..., n_S), blocks per stage.

  Returns:
    bool[L] numpy array, False for the first block of every stage, True otherwise.
  """
  sizes = _check_stage_sizes(stage_sizes)
  return np.concatenate([np.arange(n) > 0 for n in sizes])


def _block_positions(stage_sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """int[L] stage index and int[L] position within the stage of every block."""
  stage = np.concatenate([np.full(n, s) for s, n in enumerate(stage_sizes)])
  position = np.concatenate([np.arange(n) for n in stage_sizes])
  return stage, position


def first_blocks_mask(stage_sizes: Sequence[int], depths: jax.Array) -> jax.Array:
  """Keeps the first depths[s] blocks of every stage s.

  Args:
    stage_sizes: (n_1, ..., n_S), blocks per stage (static).
    depths: int[S], may be traced; values above n_s keep the whole stage.

  Returns:
    bool[L], True for block j of stage s iff j < depths[s].
  """
  sizes = _check_stage_sizes(stage_sizes)
  depths = jnp.asarray(depths)
  if depths.shape != (len(sizes),):
    raise ValueError(f'depths has shape {depths.shape}; expected ({len(sizes)},) for '
                     f'stage_sizes={sizes}')
  stage, position = _block_positions(sizes)
  return jnp.asarray(position) < depths[stage]


def _prefix_child(key, sizes, parent, max_shortening=None):
  """Stimulative training: d_s = n_s - m_s, m_s ~ UniformInt{0..M_s-1}."""
  if max_shortening is None:
    max_shortening = sizes
  max_shortening = tuple(int(m) for m in max_shortening)
  if len(max_shortening) != len(sizes) or any(
      not 1 <= m <= n for m, n in zip(max_shortening, sizes)):
    raise ValueError(f'max_shortening={max_shortening} must give one M_s per stage with '
                     f'1 <= M_s <= n_s for stage_sizes={sizes}')
  shortening = jax.random.randint(key, (len(sizes),), 0, jnp.asarray(max_shortening))
  depths = jnp.asarray(sizes) - shortening
  return first_blocks_mask(sizes, depths) & parent


def _bernoulli_child(key, sizes, parent, drop_prob=0.2):
  """Drops every droppable block of the parent independently with probability drop_prob."""
  _check_unit_interval('drop_prob', drop_prob)
  drop = jax.random.bernoulli(key, drop_prob, parent.shape) & droppable_mask(sizes)
  return parent & ~drop


def _geometric_child(key, sizes, parent, gamma=0.5):
  """Drops k >= 1 uniformly chosen droppable blocks of the parent, P(k) ∝ gamma^k."""
  if not _is_traced(gamma) and not (math.isfinite(float(gamma)) and float(gamma) > 0.0):
    raise ValueError(f'gamma={gamma!r} must be a finite number > 0')
  droppable = droppable_mask(sizes)
  num_droppable = int(droppable.sum())
  if num_droppable == 0:
    return parent
  available = parent & droppable
  num_available = jnp.sum(available)
  count_key, choice_key = jax.random.split(key)
  ks = jnp.arange(1, num_droppable + 1)
  log_weights = ks * jnp.log(jnp.asarray(gamma, jnp.float32))
  # Only k <= num_available is possible; with nothing available use any finite logits.
  logits = jnp.where((ks <= num_available) | (num_available == 0), log_weights, -jnp.inf)
  num_drop = jnp.where(num_available > 0, 1 + jax.random.categorical(count_key, logits), 0)
  # Available blocks get priorities in [0, 1), the rest 2: ranks 0..a-1 are the available
  # ones in a uniformly random order, so `rank < num_drop` picks num_drop of them uniformly.
  priority = jnp.where(available, jax.random.uniform(choice_key, parent.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(priority))
  return parent & ~(available & (rank < num_drop))


_SAMPLER_FNS = {
    'prefix': _prefix_child,
    'bernoulli': _bernoulli_child,
    'geometric': _geometric_child,
}


def sample_subnet(key: jax.Array, stage_sizes: Sequence[int], *, sampler: str = 'bernoulli',
                  parent: jax.Array | None = None, **sampler_kw: Any) -> jax.Array:
  """Samples a subnet of `parent` (default: the full network).

  Samplers and their keyword arguments:
    'prefix' (stimulative training): keeps the first d_s = n_s - m_s blocks of every stage,
      m_s ~ UniformInt{0..M_s-1} independently; `max_shortening` = (M_1, ..., M_S) with
      1 <= M_s <= n_s (default n_s: d_s uniform on 1..n_s). With a parent, the result is the
      intersection with the parent.
    'bernoulli' (GKT default): every droppable block still kept in the parent is dropped
      independently with probability `drop_prob` (default 0.2).
    'geometric': drops k more blocks, chosen uniformly among the parent's kept droppable
      blocks, P(k) ∝ `gamma`^k (default 0.5) for k = 1..a, a = the number available; with
      a = 0 the child equals the parent.

  Args:
    key: a typed PRNG key.
    stage_sizes: (n_1, ..., n_S), blocks per stage (static).
    sampler: 'prefix', 'bernoulli' or 'geometric' (static).
    parent: bool[L] keep mask (may be traced) that keeps every stage-first block, or None for
      the full network.
    **sampler_kw: the sampler's keyword arguments above.

  Returns:
    bool[L], a subnet of `parent` (True only where parent is) that keeps every stage-first
    block the parent keeps.

  Raises:
    ValueError: for an unknown sampler, an unknown keyword argument or an invalid value.
  """
  if sampler not in _SAMPLER_FNS:
    raise ValueError(f'sampler={sampler!r} is unknown; allowed: {SAMPLERS}')
  unknown = sorted(set(sampler_kw) - set(SAMPLER_KWARGS[sampler]))
  if unknown:
    raise ValueError(f'unknown keyword argument(s) {unknown} for sampler={sampler!r}; '
                     f'allowed: {SAMPLER_KWARGS[sampler]}')
  sizes = _check_stage_sizes(stage_sizes)
  num_blocks = sum(sizes)
  if parent is None:
    parent = jnp.ones((num_blocks,), bool)
  parent = jnp.asarray(parent).astype(bool)
  if parent.shape != (num_blocks,):
    raise ValueError(f'parent has shape {parent.shape}; expected ({num_blocks},) for '
                     f'stage_sizes={sizes}')
  return _SAMPLER_FNS[sampler](key, sizes, parent, **sampler_kw)


def sample_nested_subnets(key: jax.Array, stage_sizes: Sequence[int], num_subnets: int, *,
                          sampler: str = 'bernoulli', **sampler_kw: Any) -> jax.Array:
  """Samples a chain of nested subnets (GKT's subnet-in-subnet sampling).

  Args:
    key: a typed PRNG key.
    stage_sizes: (n_1, ..., n_S), blocks per stage (static).
    num_subnets: K >= 0, the chain length (static).
    sampler: the `sample_subnet` sampler (static).
    **sampler_kw: its keyword arguments.

  Returns:
    bool[K, L]: row 0 is a child of the full network, row k a child of row k - 1, each drawn
    by `sample_subnet` with its own key from `jax.random.split(key, K)`.
  """
  if int(num_subnets) < 0:
    raise ValueError(f'num_subnets={num_subnets!r} must be >= 0')
  sizes = _check_stage_sizes(stage_sizes)

  def step(parent, subnet_key):
    child = sample_subnet(subnet_key, sizes, sampler=sampler, parent=parent, **sampler_kw)
    return child, child

  # The carry varies over devices as the key does (per-device draws under shard_map).
  full = with_variance_of(jnp.ones((sum(sizes),), bool), jax.random.key_data(key))
  _, chain = jax.lax.scan(step, full, jax.random.split(key, int(num_subnets)))
  return chain


def pruned_every_other(stage_sizes: Sequence[int], period: int = 2) -> np.ndarray:
  """LayerDrop's pruning rule (Fan et al. 2020, "every other"): the droppable blocks,
  counted j = 1, 2, ... in network order, lose every `period`-th (j % period == 0); the
  others and the stage-first blocks stay.

  Args:
    stage_sizes: (n_1, ..., n_S), blocks per stage.
    period: >= 1 (2: every other droppable block; 1: all of them).

  Returns:
    bool[L] numpy array. ResNet-20 (3, 3, 3), period 2: [1 1 0 1 1 0 1 1 0].
  """
  if int(period) < 1:
    raise ValueError(f'period={period!r} must be >= 1')
  droppable = droppable_mask(stage_sizes)
  count = np.cumsum(droppable)  # j of every droppable block
  return ~(droppable & (count % int(period) == 0))


def smallest_subnet(stage_sizes: Sequence[int]) -> np.ndarray:
  """The smallest subnet: the blocks no sampler drops (the first of every stage).

  Args:
    stage_sizes: (n_1, ..., n_S), blocks per stage.

  Returns:
    bool[L] numpy array, `~droppable_mask(stage_sizes)`.
  """
  return ~droppable_mask(stage_sizes)


def sample_sandwich(key: jax.Array, stage_sizes: Sequence[int], num_random: int, *,
                    sampler: str = 'prefix', **sampler_kw: Any) -> jax.Array:
  """Samples the subnets of one sandwich-rule step (the full network is not among them).

  Args:
    key: a typed PRNG key.
    stage_sizes: (n_1, ..., n_S), blocks per stage (static).
    num_random: n >= 0, the random subnets (static).
    sampler: the `sample_subnet` sampler of the random subnets (static).
    **sampler_kw: its keyword arguments.

  Returns:
    bool[1 + n, L]: row 0 the smallest subnet (`smallest_subnet`), rows 1..n subnets of the
    full network drawn independently by `sample_subnet`, each with its own key from
    `jax.random.split(key, n)`.
  """
  if int(num_random) < 0:
    raise ValueError(f'num_random={num_random!r} must be >= 0')
  sizes = _check_stage_sizes(stage_sizes)
  smallest = with_variance_of(jnp.asarray(smallest_subnet(sizes))[None],
                              jax.random.key_data(key))
  if not num_random:
    return smallest
  random = jax.vmap(lambda k: sample_subnet(k, sizes, sampler=sampler, **sampler_kw))(
      jax.random.split(key, int(num_random)))
  return jnp.concatenate([smallest, random])
