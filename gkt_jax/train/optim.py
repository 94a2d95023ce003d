"""SGD with momentum (Nesterov option), coupled weight decay and lr schedules."""

from __future__ import annotations

import optax

SCHEDULES = ('cosine', 'step', 'constant')
# The `config.optim` fields read here; `train.validate_config` refuses any other.
CONFIG_FIELDS = ('lr', 'schedule', 'warmup_steps', 'step_boundaries', 'step_factor',
                 'weight_decay', 'momentum', 'nesterov')


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
  """config.lr with 'cosine' (to 0), 'step' (x step_factor at step_boundaries, fractions of
  training) or 'constant' decay, after `warmup_steps` of linear warm-up."""
  schedule = config.get('schedule', 'cosine')
  lr = float(config.lr)
  warmup = int(config.get('warmup_steps', 0))
  decay_steps = max(total_steps - warmup, 1)
  if schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif schedule == 'step':
    boundaries = config.get('step_boundaries', (0.5, 0.75))
    factor = float(config.get('step_factor', 0.1))
    main = optax.piecewise_constant_schedule(
        lr, {int(b * total_steps) - warmup: factor for b in boundaries})
  elif schedule == 'constant':
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f'optim.schedule={schedule!r} is not one of {SCHEDULES}')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation,
                                                      optax.Schedule]:
  """PyTorch-style SGD: weight decay added to the gradient before momentum."""
  schedule = learning_rate_schedule(config, total_steps)
  tx = optax.chain(
      optax.add_decayed_weights(float(config.get('weight_decay', 0.0))),
      optax.sgd(schedule, momentum=config.get('momentum', 0.9) or None,
                nesterov=bool(config.get('nesterov', False))))
  return tx, schedule
