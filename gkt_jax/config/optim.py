"""`config.optim`: the optimiser's fields, defaults and checks (SGD or AdamW, a linear
warm-up, then a cosine, step or constant learning rate); `gkt_jax.train.optim.make_optimizer`
builds the optax optimiser from them.

SGD is PyTorch's (weight decay added to the gradient before momentum, Nesterov by default);
AdamW is optax's (decoupled weight decay, which skips no parameter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from gkt_jax import settings as settings_lib
from gkt_jax.settings import boolean, integer, interval, non_negative, one_of, setting

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'step', 'constant')


def _fractions(field: str, value: Any) -> None:
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
      or not all(settings_lib.is_number(b) and 0.0 <= float(b) <= 1.0 for b in value)):
    settings_lib.fail(field, value, 'must be a sequence of fractions of training in [0, 1]')


@dataclasses.dataclass(frozen=True)
class OptimSettings(settings_lib.Settings):
  """`config.optim`. `momentum` and `nesterov` are SGD's; `b1`, `b2` and `eps` AdamW's."""
  optimizer: str = setting('sgd', one_of(OPTIMIZERS, 'optimizer'))
  lr: float = setting(0.1, non_negative)
  schedule: str = setting('cosine', one_of(SCHEDULES, 'schedule'))
  warmup_steps: int = setting(0, integer(0))
  step_boundaries: tuple[float, ...] = setting((0.5, 0.75), _fractions)
  step_factor: float = setting(0.1, non_negative)
  weight_decay: float = setting(5e-4, non_negative)
  momentum: float = setting(0.9, interval(0.0, 1.0, high_open=True))
  nesterov: bool = setting(True, boolean)
  b1: float = setting(0.9, interval(0.0, 1.0, high_open=True))
  b2: float = setting(0.999, interval(0.0, 1.0, high_open=True))
  eps: float = setting(1e-8, interval(0.0, low_open=True))


# The fields a config file's SGD section holds (AdamW's appear where a config chooses it).
SGD_FIELDS = ('lr', 'momentum', 'nesterov', 'weight_decay', 'schedule', 'warmup_steps',
              'step_boundaries', 'step_factor')
ADAMW_FIELDS = ('optimizer', 'lr', 'b1', 'b2', 'eps', 'weight_decay', 'schedule',
                'warmup_steps', 'step_boundaries', 'step_factor')


def section_defaults(fields: Sequence[str] = SGD_FIELDS, **values) -> dict:
  """A config's optim section: `fields` at their defaults, `values` over them."""
  defaults = OptimSettings.defaults()
  unknown = set(values) - set(defaults)
  if unknown:
    raise ValueError(f'optim: {sorted(unknown)} not fields of OptimSettings; accepted: '
                     f'{OptimSettings.names()}')
  return {name: values.get(name, defaults[name]) for name in dict.fromkeys(
      tuple(fields) + tuple(values))}


def read(section: OptimSettings | Mapping[str, Any]) -> OptimSettings:
  """Checked settings of a config section (absent fields at their defaults)."""
  if isinstance(section, OptimSettings):
    return section
  return OptimSettings.read(section, 'optim', owner='the optimizer')
