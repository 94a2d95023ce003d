"""Checks of a whole config that run before anything is built or compiled.

`validate_config(config, num_devices=...)` refuses a config the trainer would fail on later
(often after minutes of compilation or training) or would run silently wrong (a misspelt
field). Each section's fields, defaults and checks are its settings class's
(gkt_jax/config/); this module adds the rules between sections and registries: the method
and the evaluators against the network's stage sizes, the batches against the device count,
names against the registries of methods, models and evaluators. Every error is one line,
`config.<dotted.field>=<value>: <what is allowed>`.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np

from gkt_jax import evaluate, methods, models
from gkt_jax.config import data as data_config
from gkt_jax.config import evals as evals_config
from gkt_jax.config import model as model_config
from gkt_jax.config import optim as optim_config
from gkt_jax.config import run as run_config
from gkt_jax.settings import ConfigError, fail, is_int, one_of

# 'jit': one program over the mesh, BatchNorm over the global batch; 'pmap': shard_map,
# per-device BatchNorm statistics, gradients averaged across devices.
PARALLEL_MODES = run_config.PARALLEL_MODES

_Section = (Mapping, ml_collections.ConfigDict)


def _section(config: ml_collections.ConfigDict, name: str):
  section = config[name] if name in config else None
  if not isinstance(section, _Section):
    fail(name, section, 'required: a ConfigDict of fields')
  return section


def _stage_sizes(model_cfg) -> tuple[int, ...]:
  """The network's blocks per stage, from building it (its builder checks what the field
  checks cannot see, e.g. a CIFAR ResNet with another stem)."""
  model_config.read(model_cfg)
  try:
    return tuple(models.from_config(model_cfg, 1).stage_sizes)
  except ValueError as e:  # the builders name the field as 'model.<field>=...' where they can
    message = str(e)
    raise ConfigError(f'config.{message}' if message.startswith('model.')
                      else f'config.model: {message}') from None


def _check_devices(data: data_config.DataSettings, num_devices: int) -> None:
  """Every device gets an equal share of a training batch and at least one example of an
  evaluation batch."""
  batch_size = data.batch_size
  if batch_size % num_devices:
    lower = batch_size - batch_size % num_devices
    nearest = ' or '.join(str(b) for b in sorted({lower or num_devices, lower + num_devices}))
    fail('data.batch_size', batch_size,
         f'must be divisible by the {num_devices} devices; use a multiple of the device '
         f'count, e.g. {nearest}')
  if data.eval_batch_size < num_devices:
    fail('data.eval_batch_size', data.eval_batch_size,
         f'must be >= the device count {num_devices} (it is rounded down to a multiple)')


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int | None = None
                    ) -> None:
  """Checks a training config before anything is built.

  Args:
    config: a full training config (see experiments/configs/).
    num_devices: the global device count, to check the batch sizes against; None skips it.

  Raises:
    ConfigError (a ValueError): `config.<field>=<value>: <what is allowed>` (one line) for
      the first invalid field: a section's own checks (gkt_jax/config/), a method name not
      in methods.REGISTRY, an evaluator type not in evaluate.EVALUATORS, a method or
      evaluator field that does not fit the network's stage sizes, a batch not divisible by
      num_devices.
  """
  if num_devices is not None and (not is_int(num_devices) or num_devices < 1):
    raise ConfigError(f'num_devices={num_devices!r}: must be an integer >= 1')
  run_config.read(config)
  run_config.check_durations(config)
  method_cfg = _section(config, 'method')
  name = method_cfg['name'] if 'name' in method_cfg else None
  one_of(tuple(sorted(methods.REGISTRY)), 'method')('method.name', name)
  method = methods.REGISTRY[method_cfg['name']].read_settings(method_cfg)
  stage_sizes = _stage_sizes(_section(config, 'model'))
  method.check_stage_sizes('method', stage_sizes)
  data = data_config.read(_section(config, 'data'))
  if num_devices is not None:
    _check_devices(data, num_devices)
  optim_config.read(_section(config, 'optim'))
  evals = config['evals'] if 'evals' in config else None
  for name, evaluator in evals_config.read(evals, method_cfg['name']).items():
    one_of(tuple(sorted(evaluate.EVALUATORS)), 'evaluator type')(f'evals.{name}.type',
                                                                 evaluator.type)
    evaluator.check_stage_sizes(f'evals.{name}', stage_sizes)


def validate_labels(labels: np.ndarray, num_classes: int, split: str) -> None:
  """Checks that every label of a split is a class index.

  Args:
    labels: int[N], the split's labels.
    num_classes: C >= 1.
    split: its name for the message, e.g. 'train' or 'test'.

  Raises:
    ValueError: one line naming the split, the first few offending values and [0, C).
  """
  labels = np.asarray(labels)
  if not is_int(num_classes) or num_classes < 1:
    raise ConfigError(f'{split} labels: num_classes={num_classes!r} must be an integer >= 1')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f'{split} labels have dtype {labels.dtype}: must be integers in '
                     f'[0, {num_classes})')
  bad = (labels < 0) | (labels >= num_classes)
  if np.any(bad):
    values = np.unique(labels[bad])
    shown = ', '.join(str(v) for v in values[:5]) + (', ...' if len(values) > 5 else '')
    raise ConfigError(f'{split} labels hold {int(bad.sum())} of {labels.size} values outside '
                     f'[0, {num_classes}): {shown} (first at index '
                     f'{int(np.flatnonzero(bad.ravel())[0])}); allowed: class indices '
                     f'0..{num_classes - 1}')
