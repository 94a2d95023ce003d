"""The optimiser of `config.optim` (its settings: gkt_jax.config.optim), the same for config
files and research code:

  tx, schedule = make_optimizer({'lr': 0.05}, total_steps)  # the config files' default SGD

SGD is PyTorch's (weight decay added to the gradient before momentum, Nesterov by default);
AdamW is optax's (decoupled weight decay, which skips no parameter). Either runs a linear
warm-up of `warmup_steps`, then a 'cosine' (to 0), 'step' (x step_factor at step_boundaries,
fractions of training) or 'constant' learning rate.
"""

from __future__ import annotations

import optax

from gkt_jax.config.optim import (ADAMW_FIELDS, OPTIMIZERS, SCHEDULES, SGD_FIELDS,
                                  OptimSettings, read, section_defaults)


def learning_rate_schedule(section, total_steps: int) -> optax.Schedule:
  """The learning rate per step of `section` (OptimSettings or a config section)."""
  s = read(section)
  warmup = s.warmup_steps
  decay_steps = max(total_steps - warmup, 1)
  if s.schedule == 'cosine':
    main = optax.cosine_decay_schedule(s.lr, decay_steps)
  elif s.schedule == 'step':
    main = optax.piecewise_constant_schedule(
        s.lr, {int(b * total_steps) - warmup: s.step_factor for b in s.step_boundaries})
  else:
    main = optax.constant_schedule(s.lr)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, s.lr, warmup), main], [warmup])


def make_optimizer(section, total_steps: int) -> tuple[optax.GradientTransformation,
                                                       optax.Schedule]:
  """(optimizer, schedule) of `section` (OptimSettings or a config section; absent fields at
  their defaults, so `{'lr': x}` is the config files' SGD at learning rate x)."""
  s = read(section)
  schedule = learning_rate_schedule(s, total_steps)
  if s.optimizer == 'adamw':
    return optax.adamw(schedule, b1=s.b1, b2=s.b2, eps=s.eps,
                       weight_decay=s.weight_decay), schedule
  tx = optax.chain(optax.add_decayed_weights(s.weight_decay),
                   optax.sgd(schedule, momentum=s.momentum or None, nesterov=s.nesterov))
  return tx, schedule


__all__ = ['ADAMW_FIELDS', 'OPTIMIZERS', 'SCHEDULES', 'SGD_FIELDS', 'OptimSettings',
           'learning_rate_schedule', 'make_optimizer', 'read', 'section_defaults']
