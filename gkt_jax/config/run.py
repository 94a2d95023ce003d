"""The run's own fields, the top level of a config beside its sections (method, model, data,
optim, evals) and durations (`<prefix>_steps` / `<prefix>_epochs`): one settings class, read
by the config files (their defaults), the validator and the trainer."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from gkt_jax import settings as settings_lib
from gkt_jax.settings import boolean, integer, one_of, optional, setting

PARALLEL_MODES = ('jit', 'pmap')
SECTIONS = ('method', 'model', 'data', 'optim', 'evals')
DURATION_PREFIXES = ('total', 'log_every', 'eval_every', 'ckpt_every')


def _existing_dir(field: str, value: Any) -> None:
  if not isinstance(value, str) or not os.path.isdir(value):
    settings_lib.fail(field, value, 'must be an existing workdir or checkpoint directory')


def _text(field: str, value: Any) -> None:
  if not isinstance(value, str):
    settings_lib.fail(field, value, 'must be a string')


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
  allow_resume_changes: str = setting('', _text)


def _not_run_fields(config) -> tuple[str, ...]:
  return SECTIONS + tuple(f'{p}_{unit}' for p in DURATION_PREFIXES
                          for unit in ('steps', 'epochs'))


def read(config) -> RunSettings:
  """Checked run settings of a config (absent fields at their defaults); a top-level field
  that is none of them, no section and no duration is refused in one line."""
  return RunSettings.read(config, '', owner='a run config', ignore=_not_run_fields(config))
