"""Small helpers shared by the trainer and experiments."""

from __future__ import annotations

import jax


def steps(prefix: str, config, steps_per_epoch: int, *, default=None) -> int | None:
  """Converts `{prefix}_steps` / `{prefix}_epochs` of a config to steps (exactly one form).

  Args:
    prefix: e.g. 'total', 'log_every', 'eval_every'.
    config: a ConfigDict (or dict) holding at most one of the two fields.
    steps_per_epoch: training steps in one epoch.
    default: returned when neither field is set.
  """
  given = {k: config.get(f'{prefix}_{k}') for k in ('steps', 'epochs')}
  given = {k: v for k, v in given.items() if v is not None}
  if len(given) > 1:
    raise ValueError(f'config sets both {prefix}_steps={given["steps"]} and '
                     f'{prefix}_epochs={given["epochs"]}: set one of them')
  if not given:
    return default
  if 'steps' in given:
    value = int(given['steps'])
  else:
    value = max(1, int(round(float(given['epochs']) * steps_per_epoch)))
  if value < 1:
    raise ValueError(f'{prefix}_{next(iter(given))}={next(iter(given.values()))} gives '
                     f'{value} steps; it must give at least 1')
  return value


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'


def with_variance_of(x: jax.Array, like: jax.Array) -> jax.Array:
  """x, varying over the same mesh axes as `like` (inside `jax.shard_map`, the carries of a
  scan and the branches of a cond must agree in device variance); outside shard_map, x."""
  def varying(a):
    return set(getattr(getattr(jax.typeof(a), 'manual_axis_type', None), 'varying', ()) or ())

  axes = tuple(sorted(varying(like) - varying(x)))  # those x does not vary over already
  return jax.lax.pcast(x, axes, to='varying') if axes else x


def multihost_utils():
  """`jax.experimental.multihost_utils`, imported when first needed."""
  from jax.experimental import multihost_utils as module  # pylint: disable=g-import-not-at-top
  return module


def all_processes(ok: bool) -> bool:
  """True when `ok` holds in every process (a collective in multi-process runs)."""
  if jax.process_count() == 1:
    return ok
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils().process_allgather(np.asarray([ok], np.int32))))
