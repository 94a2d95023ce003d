"""Config and label checks that run before anything is built or compiled.

`validate_config(config, num_devices=...)` refuses a config the trainer would fail on later
(often after minutes of compilation or training, e.g. a final-only evaluator) or would run
silently wrong (a misspelt method field). Every error is one line,
`config.<dotted.field>=<value>: <what is allowed>`. Allowed names come from the modules that
use them (methods.REGISTRY, models.ARCHITECTURES, data.DATASETS, masks.SAMPLERS, optim.SCHEDULES,
evaluate.EVALUATORS), so a name added there is accepted here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import inspect
from typing import Any

import ml_collections
import numpy as np

from gkt_jax import data as data_lib
from gkt_jax import evaluate, masks, methods, models
from gkt_jax.models import conv, resnet
from gkt_jax.settings import (Check, ConfigError, boolean, fail, integer, interval, is_int,
                              one_of, optional, positive)
from gkt_jax.train import optim, run_settings

# 'jit': one program over the mesh, BatchNorm over the global batch; 'pmap': shard_map,
# per-device BatchNorm statistics, gradients averaged across devices.
PARALLEL_MODES = run_settings.PARALLEL_MODES

_Section = (Mapping, ml_collections.ConfigDict)
Fields = Mapping[str, Any] | ml_collections.ConfigDict

# Fields of `config.evals.<name>` (a method's fields are checked by its settings class).
_EVAL_CHECKS: dict[str, Check] = {
    'final_only': boolean,
    'num_chains': integer(1),
    'num_subnets': integer(1),
    'levels': integer(1),
    'seed': integer(0),
    'sampler': one_of(masks.SAMPLERS, 'sampler'),
    **masks.SAMPLER_CHECKS,
}

_MODEL_CHECKS: dict[str, Check] = {
    'arch': one_of(models.ARCHITECTURES, 'architecture'),  # read at each check
    'width_multiplier': positive,
    'shortcut': optional(one_of(resnet.SHORTCUTS, 'shortcut')),
    'stem': optional(one_of(resnet.STEMS, 'stem')),
    'conv_impl': one_of(conv.IMPLS, 'conv implementation'),
    'bn_momentum': interval(0.0, 1.0, high_open=True),
    'block_barriers': one_of(resnet.BLOCK_BARRIERS, 'block_barriers value'),
    'masked_saves': one_of(resnet.MASKED_SAVES, 'masked_saves value'),
    'pad_downsample': one_of(resnet.PAD_DOWNSAMPLES, 'pad_downsample value'),
}


def _check_fields(section: Fields, path: str, checks: Mapping[str, Check]) -> None:
  for name, value in section.items():
    if name in checks:
      checks[name](f'{path}.{name}', value)


def _check_known(section: Fields, path: str, accepted: Sequence[str],
                 owner: str) -> None:
  for name in section:
    if name not in accepted:
      fail(f'{path}.{name}', section[name],
            f'not a field of {owner}; accepted: {tuple(sorted(accepted))}')


def _section(config: ml_collections.ConfigDict, name: str) -> Fields:
  section = config.get(name)
  if not isinstance(section, _Section):
    fail(name, section, 'required: a ConfigDict of fields')
  return section


def _check_model(model_cfg: Fields) -> tuple[int, ...]:
  """Checks config.model; returns the network's stage sizes."""
  if 'arch' not in model_cfg:
    fail('model.arch', None, f'required; allowed: {tuple(models.ARCHITECTURES)}')
  _MODEL_CHECKS['arch']('model.arch', model_cfg['arch'])
  _check_known(model_cfg, 'model', ('arch',) + models.ARCHITECTURES[model_cfg['arch']].fields,
               f"the model {model_cfg['arch']!r}")
  _check_fields(model_cfg, 'model', _MODEL_CHECKS)
  try:  # what the field checks above cannot see (e.g. a CIFAR ResNet with another stem)
    return tuple(models.from_config(model_cfg, 1).stage_sizes)
  except ValueError as e:  # the builders name the field as 'model.<field>=...' where they can
    message = str(e)
    raise ConfigError(f'config.{message}' if message.startswith('model.')
                      else f'config.model: {message}') from None


def _check_max_shortening(field: str, value: Any, stage_sizes: tuple[int, ...]) -> None:
  if value is None:
    return
  if len(value) != len(stage_sizes) or any(m > n for m, n in zip(value, stage_sizes)):
    fail(field, value, f'one M_s per stage with 1 <= M_s <= n_s; the stage sizes are '
          f'{stage_sizes}')


def _check_method(method_cfg: Fields) -> None:
  """The method's name, then its settings (unknown fields, values, rules between them)."""
  name = method_cfg.get('name')
  one_of(tuple(sorted(methods.REGISTRY)), 'method')('method.name', name)
  methods.REGISTRY[name].read_settings(method_cfg)


def _check_evaluator(name: str, eval_cfg: Any, stage_sizes: tuple[int, ...]) -> None:
  path = f'evals.{name}'
  if not isinstance(eval_cfg, _Section):
    fail(path, eval_cfg, 'must be a dict(type=..., ...) of evaluator arguments')
  kind = eval_cfg.get('type', name)
  one_of(tuple(sorted(evaluate.EVALUATORS)), 'evaluator type')(f'{path}.type', kind)
  params = list(inspect.signature(evaluate.EVALUATORS[kind]).parameters.values())[1:]
  accepted = {'type', 'final_only'} | {
      p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
  owner = f'evaluator {kind!r}'
  if any(p.kind == p.VAR_KEYWORD for p in params):  # **sampler_kw
    default = next((p.default for p in params if p.name == 'sampler'), None)
    sampler = eval_cfg.get('sampler', default)
    _EVAL_CHECKS['sampler'](f'{path}.sampler', sampler)
    accepted |= set(masks.SAMPLER_KWARGS[sampler])
    owner += f' with sampler={sampler!r}'
  _check_known(eval_cfg, path, tuple(accepted), owner)
  _check_fields(eval_cfg, path, _EVAL_CHECKS)
  _check_max_shortening(f'{path}.max_shortening', eval_cfg.get('max_shortening'), stage_sizes)


def _check_durations(config: ml_collections.ConfigDict) -> None:
  """`{prefix}_steps` / `{prefix}_epochs` pairs, as `utils.steps` reads them (total required)."""
  prefixes = {k.rsplit('_', 1)[0] for k in config if k.endswith(('_steps', '_epochs'))}
  for prefix in sorted(prefixes | {'total'}):
    steps, epochs = config.get(f'{prefix}_steps'), config.get(f'{prefix}_epochs')
    if steps is not None and epochs is not None:
      fail(f'{prefix}_epochs', epochs, f'set only one of {prefix}_steps and {prefix}_epochs '
            f'({prefix}_steps={steps!r} is also set); on the command line give one of them '
            '(it replaces the other), in code set the other to None')
    if steps is not None:
      integer(1)(f'{prefix}_steps', steps)
    elif epochs is not None:
      positive(f'{prefix}_epochs', epochs)
    elif prefix == 'total':
      fail('total_steps', None, 'required: set total_steps or total_epochs')


def _check_data(data_cfg: Fields, num_devices: int | None) -> None:
  datasets = tuple(data_lib.DATASETS)  # read now: names may be added after import
  one_of(datasets, 'dataset')('data.name', data_cfg.get('name'))
  integer(1)('data.batch_size', data_cfg.get('batch_size'))
  if 'eval_batch_size' in data_cfg:
    integer(1)('data.eval_batch_size', data_cfg['eval_batch_size'])
  per_class = (data_cfg.get('options') or {}).get('train_examples_per_class')
  if per_class is not None:  # (more than a class has: found when the labels are read)
    integer(1)('data.options.train_examples_per_class', per_class)
  augment = data_cfg.get('augment') or {}
  if 'pad' in augment:
    integer(0)('data.augment.pad', augment['pad'])
  if 'flip' in augment:
    boolean('data.augment.flip', augment['flip'])
  if num_devices is None:
    return
  batch_size = data_cfg['batch_size']
  if batch_size % num_devices:
    lower = batch_size - batch_size % num_devices
    nearest = ' or '.join(str(b) for b in sorted({lower or num_devices, lower + num_devices}))
    fail('data.batch_size', batch_size,
          f'must be divisible by the {num_devices} devices; use a multiple of the device '
          f'count, e.g. {nearest}')
  eval_batch_size = data_cfg.get('eval_batch_size', num_devices)
  if eval_batch_size < num_devices:
    fail('data.eval_batch_size', eval_batch_size,
          f'must be >= the device count {num_devices} (it is rounded down to a multiple)')


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int | None = None
                    ) -> None:
  """Checks a training config before anything is built.

  Args:
    config: a full training config (see experiments/configs/common.py).
    num_devices: the global device count, to check data.batch_size against; None skips it.

  Raises:
    ValueError: `config.<field>=<value>: <what is allowed>` (one line) for the first invalid
      field: unknown method, architecture, dataset, sampler, schedule or evaluator type; a
      field the method, model, optimizer or evaluator does not accept; a probability outside
      [0, 1]; levels, loops, n_sub or a batch size < 1; a non-positive temperature; both or
      neither of total_steps / total_epochs; a batch not divisible by num_devices.
  """
  if num_devices is not None and (not is_int(num_devices) or num_devices < 1):
    raise ConfigError(f'num_devices={num_devices!r}: must be an integer >= 1')
  run_settings.read(config)
  method_cfg = _section(config, 'method')
  _check_method(method_cfg)
  stage_sizes = _check_model(_section(config, 'model'))
  _check_max_shortening('method.max_shortening', method_cfg.get('max_shortening'),
                        stage_sizes)
  _check_data(_section(config, 'data'), num_devices)
  optim.read(_section(config, 'optim'))
  _check_durations(config)
  evals = config.get('evals')
  if evals is not None:
    if not isinstance(evals, _Section):
      fail('evals', evals, 'must be a ConfigDict of evaluator dicts')
    for name, eval_cfg in evals.items():
      _check_evaluator(name, eval_cfg, stage_sizes)


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
