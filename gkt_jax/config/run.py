"""The run's own fields, the top level of a config beside its sections (method, model, data,
optim, evals) and durations (`<prefix>_steps` / `<prefix>_epochs`): one settings class, read
by the config files (their defaults), the validator and the trainer."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from gkt_jax import settings as settings_lib
from gkt_jax.settings import boolean, integer, one_of, optional, positive, setting, text

PARALLEL_MODES = ('jit', 'pmap')
SECTIONS = ('method', 'model', 'data', 'optim', 'evals')
DURATION_PREFIXES = ('total', 'log_every', 'eval_every', 'ckpt_every')


def _existing_dir(field: str, value: Any) -> None:
  if not isinstance(value, str) or not os.path.isdir(value):
    settings_lib.fail(field, value, 'must be an existing workdir or checkpoint directory')


@dataclasses.dataclass(frozen=True)
class RunSettings(settings_lib.Settings):
  """seed; parallel: 'jit' (one program over the mesh) or 'pmap' (per-device BatchNorm,
  pmean-ed gradients); per_device_subnets ('pmap' only: each device draws its own subnets);
  checkpoints (every evaluation, at the end and on a signal) and how many are kept; resume:
  another workdir to continue (full state); init: a workdir or checkpoint to take weights
  from; plots; verbose (progress on stdout); train_accuracy_examples: the final evaluation's
  training accuracy (the regime: train minus test) on the whole train split up to this many
  images, else on a fixed sample of this many (None: all); allow_resume_changes:
  comma-separated dotted fields a resume may change besides its length, cadence and
  evaluation (gkt_jax.train.checkpoint.RESUME_MAY_CHANGE)."""
  seed: int = setting(0, integer(0))
  parallel: str = setting('jit', one_of(PARALLEL_MODES, 'parallel mode'))
  per_device_subnets: bool = setting(False, boolean)
  checkpoints: bool = setting(True, boolean)
  max_checkpoints: int | None = setting(3, optional(integer(1)), unset=int)
  resume: str | None = setting(None, optional(_existing_dir), unset=str)
  init: str | None = setting(None, optional(_existing_dir), unset=str)
  plots: bool = setting(True, boolean)
  verbose: bool = setting(True, boolean)
  train_accuracy_examples: int | None = setting(10_000, optional(integer(1)), unset=int)
  allow_resume_changes: str = setting('', text)


def _not_run_fields(config) -> tuple[str, ...]:
  return SECTIONS + tuple(f'{p}_{unit}' for p in DURATION_PREFIXES
                          for unit in ('steps', 'epochs'))


def check_durations(config) -> None:
  """`{prefix}_steps` / `{prefix}_epochs` pairs, as `utils.steps` reads them: one of each
  pair at most, total_* required."""
  prefixes = {k.rsplit('_', 1)[0] for k in config if k.endswith(('_steps', '_epochs'))}
  for prefix in sorted(prefixes | {'total'}):
    steps, epochs = config.get(f'{prefix}_steps'), config.get(f'{prefix}_epochs')
    if steps is not None and epochs is not None:
      settings_lib.fail(
          f'{prefix}_epochs', epochs, f'set only one of {prefix}_steps and {prefix}_epochs '
          f'({prefix}_steps={steps!r} is also set); on the command line give one of them '
          '(it replaces the other), in code set the other to None')
    if steps is not None:
      integer(1)(f'{prefix}_steps', steps)
    elif epochs is not None:
      positive(f'{prefix}_epochs', epochs)
    elif prefix == 'total':
      settings_lib.fail('total_steps', None, 'required: set total_steps or total_epochs')


def read(config) -> RunSettings:
  """Checked run settings of a config (absent fields at their defaults; its durations are
  `check_durations`'); a top-level field that is none of them, no section and no duration
  is refused in one line."""
  return RunSettings.read(config, '', owner='a run config', ignore=_not_run_fields(config))
