"""Group knowledge: the aggregated logits of the subnets of one GKT group.

GKT (our reading, `docs/methods/gkt.md`) aggregates the logits of the subnets sampled at one
nesting level, across sampling loops, into the soft targets that teach the next level.
`update_group_knowledge` adds one subnet's logits (the form a training step uses inside a
`lax.scan`); `group_soft_targets` applies it over a stack of logits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gkt_jax.config.names import AGGREGATES


def _check_aggregate(aggregate: str, momentum: Any) -> None:
  if aggregate not in AGGREGATES:
    raise ValueError(f'aggregate={aggregate!r} is unknown; allowed: {AGGREGATES}')
  if not isinstance(momentum, jax.core.Tracer) and not 0.0 <= float(momentum) <= 1.0:
    raise ValueError(f'momentum={momentum!r} is outside the allowed interval [0, 1]')


def update_group_knowledge(knowledge: jax.Array, logits: jax.Array, num_seen: jax.Array | int,
                           *, aggregate: str = 'ema', momentum: float = 0.5) -> jax.Array:
  """Adds one subnet's logits to a group's knowledge.

  Args:
    knowledge: f32[B, C], the aggregate of the first `num_seen` logits (ignored, and may be
      anything finite, when num_seen == 0).
    logits: f32[B, C], the new subnet's logits (callers pass them through stop_gradient).
    num_seen: int scalar (may be traced), how many logits `knowledge` already aggregates.
    aggregate: 'ema', momentum * knowledge + (1 - momentum) * logits; or 'mean', the running
      mean knowledge + (logits - knowledge) / (num_seen + 1).
    momentum: the EMA weight of the old knowledge, in [0, 1].

  Returns:
    f32[B, C]: `logits` when num_seen == 0, else the updated aggregate.

  Raises:
    ValueError: for an unknown aggregate or a concrete momentum outside [0, 1].
  """
  _check_aggregate(aggregate, momentum)
  if aggregate == 'ema':
    updated = momentum * knowledge + (1.0 - momentum) * logits
  else:
    updated = knowledge + (logits - knowledge) / (jnp.asarray(num_seen) + 1.0)
  return jnp.where(jnp.asarray(num_seen) == 0, logits, updated)


def group_soft_targets(level_logits: jax.Array, aggregate: str = 'ema',
                       momentum: float = 0.5) -> jax.Array:
  """Group knowledge after each subnet of a group, in sampling order.

  Args:
    level_logits: f32[n, B, C], the logits z_0..z_{n-1} of the group's n subnets.
    aggregate: 'ema' (a_0 = z_0, a_l = momentum * a_{l-1} + (1 - momentum) * z_l) or 'mean'
      (a_l = mean(z_0..z_l)).
    momentum: the EMA weight of the old knowledge, in [0, 1].

  Returns:
    f32[n, B, C], entry l = a_l, the knowledge after l + 1 subnets.

  Raises:
    ValueError: for an unknown aggregate or a concrete momentum outside [0, 1].
  """
  _check_aggregate(aggregate, momentum)
  level_logits = jnp.asarray(level_logits)
  level_logits = level_logits.astype(jnp.promote_types(level_logits.dtype, jnp.float32))

  def step(knowledge, inputs):
    num_seen, logits = inputs
    knowledge = update_group_knowledge(knowledge, logits, num_seen, aggregate=aggregate,
                                       momentum=momentum)
    return knowledge, knowledge

  init = jnp.zeros(level_logits.shape[1:], level_logits.dtype)
  _, targets = jax.lax.scan(step, init, (jnp.arange(level_logits.shape[0]), level_logits))
  return targets
