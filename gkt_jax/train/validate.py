"""Config and label checks that run before anything is built or compiled.

`validate_config(config, num_devices=...)` refuses a config the trainer would fail on later
(often after minutes of compilation or training, e.g. a final-only evaluator) or would run
silently wrong (a misspelt method field). Every error is one line,
`config.<dotted.field>=<value>: <what is allowed>`. Allowed names come from the modules that
use them (methods.REGISTRY, models.ARCHS, data.DATASETS, masks.SAMPLERS, optim.SCHEDULES,
evaluate.EVALUATORS), so a name added there is accepted here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import inspect
import math
import os
from typing import Any

import ml_collections
import numpy as np

from gkt_jax import data as data_lib
from gkt_jax import evaluate, groups, masks, methods, models
from gkt_jax.models import conv, resnet
from gkt_jax.train import optim

# 'jit': one program over the mesh, BatchNorm over the global batch; 'pmap': shard_map,
# per-device BatchNorm statistics, gradients averaged across devices.
PARALLEL_MODES = ('jit', 'pmap')

Check = Callable[[str, Any], None]
_Section = (Mapping, ml_collections.ConfigDict)
Fields = Mapping[str, Any] | ml_collections.ConfigDict


class ConfigError(ValueError):
  """A config field or the data holds a value the run cannot use (one-line message)."""


def _fail(field: str, value: Any, allowed: str) -> None:
  if isinstance(value, ml_collections.ConfigDict):  # its repr spans lines
    value = value.to_dict()
  raise ConfigError(f'config.{field}={value!r}: {allowed}')


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
  return ((_is_int(value) or isinstance(value, (float, np.floating)))
          and math.isfinite(float(value)))


def _integer(minimum: int) -> Check:
  def check(field, value):
    if not _is_int(value) or value < minimum:
      _fail(field, value, f'must be an integer >= {minimum}')
  return check


def _interval(low: float, high: float = math.inf, *, low_open: bool = False,
              high_open: bool = False, what: str = 'a number') -> Check:
  """A finite number in the interval; `[low, inf)` prints as `>= low`."""
  if high == math.inf:
    allowed = f'must be {what} {">" if low_open else ">="} {low:g}'
  else:
    allowed = (f'must be {what} in {"(" if low_open else "["}{low:g}, {high:g}'
               f'{")" if high_open else "]"}')

  def check(field, value):
    if not _is_number(value):
      _fail(field, value, allowed)
    x = float(value)
    if x < low or (low_open and x == low) or x > high or (high_open and x == high):
      _fail(field, value, allowed)
  return check


def _one_of(choices: Sequence[Any], what: str) -> Check:
  def check(field, value):
    if value not in choices:
      _fail(field, value, f'unknown {what}; allowed: {tuple(choices)}')
  return check


def _boolean(field: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    _fail(field, value, 'must be True or False')


def _optional(check: Check) -> Check:
  def optional_check(field, value):
    if value is not None:
      check(field, value)
  return optional_check


def _run_dir(field: str, value: Any) -> None:
  """The workdir of a trained run (its config.json and checkpoints)."""
  if not isinstance(value, str) or not value:
    _fail(field, value, 'must be the workdir of a trained run (a path)')
  if not os.path.exists(os.path.join(value, 'config.json')):
    _fail(field, value, 'no config.json there: must be the workdir of a trained run')


def _run_dirs(field: str, value: Any) -> None:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    _fail(field, value, 'must be a list of workdirs of trained runs')
  for i, item in enumerate(value):
    _run_dir(f'{field}[{i}]', item)


def _positive_ints(field: str, value: Any) -> None:
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
      or not all(_is_int(v) and v >= 1 for v in value)):
    _fail(field, value, 'must be a non-empty sequence of integers >= 1')


_probability = _interval(0.0, 1.0, what='a probability')
_non_negative = _interval(0.0)
_positive = _interval(0.0, low_open=True)

# Fields of `config.method` and of `config.evals.<name>`: one meaning per name.
_SUBNET_CHECKS: dict[str, Check] = {
    'label_smoothing': _probability,
    'bn_recalibration_images': _integer(0),
    # stochastic depth
    'final_survival': _probability,
    'rule': _one_of(masks.SURVIVAL_RULES, 'survival rule'),
    'test_scaling': _boolean,
    # subnet distillation (stimulative training, GKT)
    'temperature': _positive,
    'kl_weight': _non_negative,
    'subnet_label_weight': _non_negative,
    'normalize_logits': _boolean,
    'bn_stats': _one_of(methods.subnet_distillation.BN_STATS, 'BatchNorm statistics setting'),
    'subnet_resize': _boolean,
    'resize_min_scale': _interval(0.0, 1.0, low_open=True),
    'resize_buckets': _integer(1),
    'n_sub': _integer(1),
    'levels': _integer(1),
    'loops': _integer(1),
    'aggregate': _one_of(groups.AGGREGATES, 'aggregate'),
    # EMA weight of the old group knowledge (groups.update_group_knowledge).
    'momentum': _probability,
    # samplers (masks.sample_subnet); gamma is the ratio of P(k) ∝ gamma^k, not a probability.
    'sampler': _one_of(masks.SAMPLERS, 'sampler'),
    'drop_prob': _probability,
    'gamma': _positive,
    'max_shortening': _optional(_positive_ints),
    # EKD-FWSNet
    'kd_weight': _non_negative,
    'att_weight': _non_negative,
    'dropout_rate': _optional(_interval(0.0, 1.0, high_open=True, what='a probability')),
    'detach_teacher': _boolean,
    # ResKD (kd student, reskd res-students)
    'teacher': _optional(_run_dir),  # required by the method: set by the ResKD chain
    'student': _optional(_run_dir),
    'res_students': _run_dirs,
    'residual_target': _one_of(methods.reskd.RESIDUAL_TARGETS, 'residual target'),
    'alpha': _non_negative,
    'student_features': _boolean,
    # evaluators
    'final_only': _boolean,
    'num_chains': _integer(1),
    'num_subnets': _integer(1),
    'seed': _integer(0),
}

_OPTIM_CHECKS: dict[str, Check] = {
    'lr': _non_negative,
    'schedule': _one_of(optim.SCHEDULES, 'schedule'),
    'warmup_steps': _integer(0),
    'step_factor': _non_negative,
    'weight_decay': _non_negative,
    'momentum': _interval(0.0, 1.0, high_open=True),
    'nesterov': _boolean,
}

_MODEL_CHECKS: dict[str, Check] = {
    'arch': _one_of(models.ARCHS, 'architecture'),
    'width_multiplier': _positive,
    'shortcut': _optional(_one_of(resnet.SHORTCUTS, 'shortcut')),
    'stem': _optional(_one_of(resnet.STEMS, 'stem')),
    'conv_impl': _one_of(conv.IMPLS, 'conv implementation'),
    'bn_momentum': _interval(0.0, 1.0, high_open=True),
    'block_barriers': _one_of(('auto', True, False), 'block_barriers value'),
    'masked_saves': _one_of(resnet.MASKED_SAVES, 'masked_saves value'),
    'pad_downsample': _one_of(resnet.PAD_DOWNSAMPLES, 'pad_downsample value'),
}


def _check_fields(section: Fields, path: str, checks: Mapping[str, Check]) -> None:
  for name, value in section.items():
    if name in checks:
      checks[name](f'{path}.{name}', value)


def _check_known(section: Fields, path: str, accepted: Sequence[str],
                 owner: str) -> None:
  for name in section:
    if name not in accepted:
      _fail(f'{path}.{name}', section[name],
            f'not a field of {owner}; accepted: {tuple(sorted(accepted))}')


def _section(config: ml_collections.ConfigDict, name: str) -> Fields:
  section = config.get(name)
  if not isinstance(section, _Section):
    _fail(name, section, 'required: a ConfigDict of fields')
  return section


def _model_fields() -> tuple[str, ...]:
  """Fields `models.build_model` takes from `config.model` (its own and ResNet's free ones)."""
  set_by_builders = {'stage_sizes', 'stage_widths', 'num_classes', 'block', 'stem_width',
                     'parent', 'name'}
  own = set(inspect.signature(models.build_model).parameters) - {'num_classes', 'kwargs'}
  free = {f.name for f in dataclasses.fields(models.ResNet)} - set_by_builders
  return tuple(sorted(own | free))


def _check_model(model_cfg: Fields) -> tuple[int, ...]:
  """Checks config.model; returns the network's stage sizes."""
  if 'arch' not in model_cfg:
    _fail('model.arch', None, f'required; allowed: {models.ARCHS}')
  _check_known(model_cfg, 'model', _model_fields(), 'the model')
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
    _fail(field, value, f'one M_s per stage with 1 <= M_s <= n_s; the stage sizes are '
          f'{stage_sizes}')


def _check_method(method_cfg: Fields) -> None:
  name = method_cfg.get('name')
  _one_of(tuple(sorted(methods.REGISTRY)), 'method')('method.name', name)
  method_cls = methods.REGISTRY[name]
  _check_known(method_cfg, 'method', method_cls.config_fields, f'method {name!r}')
  _check_fields(method_cfg, 'method', _SUBNET_CHECKS)
  if not method_cfg.get('test_scaling', True) and 'final_survival' in method_cfg:
    # The inverted variant scales kept blocks by 1 / survival.
    _interval(0.0, 1.0, low_open=True, what='a probability')(
        'method.final_survival', method_cfg['final_survival'])


def _check_evaluator(name: str, eval_cfg: Any, stage_sizes: tuple[int, ...]) -> None:
  path = f'evals.{name}'
  if not isinstance(eval_cfg, _Section):
    _fail(path, eval_cfg, 'must be a dict(type=..., ...) of evaluator arguments')
  kind = eval_cfg.get('type', name)
  _one_of(tuple(sorted(evaluate.EVALUATORS)), 'evaluator type')(f'{path}.type', kind)
  params = list(inspect.signature(evaluate.EVALUATORS[kind]).parameters.values())[1:]
  accepted = {'type', 'final_only'} | {
      p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
  owner = f'evaluator {kind!r}'
  if any(p.kind == p.VAR_KEYWORD for p in params):  # **sampler_kw
    default = next((p.default for p in params if p.name == 'sampler'), None)
    sampler = eval_cfg.get('sampler', default)
    _SUBNET_CHECKS['sampler'](f'{path}.sampler', sampler)
    accepted |= set(masks.SAMPLER_KWARGS[sampler])
    owner += f' with sampler={sampler!r}'
  _check_known(eval_cfg, path, tuple(accepted), owner)
  _check_fields(eval_cfg, path, _SUBNET_CHECKS)
  _check_max_shortening(f'{path}.max_shortening', eval_cfg.get('max_shortening'), stage_sizes)


def _check_durations(config: ml_collections.ConfigDict) -> None:
  """`{prefix}_steps` / `{prefix}_epochs` pairs, as `utils.steps` reads them (total required)."""
  prefixes = {k.rsplit('_', 1)[0] for k in config if k.endswith(('_steps', '_epochs'))}
  for prefix in sorted(prefixes | {'total'}):
    steps, epochs = config.get(f'{prefix}_steps'), config.get(f'{prefix}_epochs')
    if steps is not None and epochs is not None:
      _fail(f'{prefix}_epochs', epochs, f'set only one of {prefix}_steps and {prefix}_epochs '
            f'({prefix}_steps={steps!r} is also set); on the command line give one of them '
            '(it replaces the other), in code set the other to None')
    if steps is not None:
      _integer(1)(f'{prefix}_steps', steps)
    elif epochs is not None:
      _positive(f'{prefix}_epochs', epochs)
    elif prefix == 'total':
      _fail('total_steps', None, 'required: set total_steps or total_epochs')


def _check_data(data_cfg: Fields, num_devices: int | None) -> None:
  datasets = tuple(data_lib.DATASETS)  # read now: names may be added after import
  _one_of(datasets, 'dataset')('data.name', data_cfg.get('name'))
  _integer(1)('data.batch_size', data_cfg.get('batch_size'))
  if 'eval_batch_size' in data_cfg:
    _integer(1)('data.eval_batch_size', data_cfg['eval_batch_size'])
  augment = data_cfg.get('augment') or {}
  if 'pad' in augment:
    _integer(0)('data.augment.pad', augment['pad'])
  if 'flip' in augment:
    _boolean('data.augment.flip', augment['flip'])
  if num_devices is None:
    return
  batch_size = data_cfg['batch_size']
  if batch_size % num_devices:
    lower = batch_size - batch_size % num_devices
    nearest = ' or '.join(str(b) for b in sorted({lower or num_devices, lower + num_devices}))
    _fail('data.batch_size', batch_size,
          f'must be divisible by the {num_devices} devices; use a multiple of the device '
          f'count, e.g. {nearest}')
  eval_batch_size = data_cfg.get('eval_batch_size', num_devices)
  if eval_batch_size < num_devices:
    _fail('data.eval_batch_size', eval_batch_size,
          f'must be >= the device count {num_devices} (it is rounded down to a multiple)')


def _check_optim(optim_cfg: Fields) -> None:
  _check_known(optim_cfg, 'optim', optim.CONFIG_FIELDS, 'the optimizer')
  _check_fields(optim_cfg, 'optim', _OPTIM_CHECKS)
  boundaries = optim_cfg.get('step_boundaries', ())
  if (isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence)
      or not all(_is_number(b) and 0.0 <= float(b) <= 1.0 for b in boundaries)):
    _fail('optim.step_boundaries', boundaries,
          'must be a sequence of fractions of training in [0, 1]')


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
  if num_devices is not None and (not _is_int(num_devices) or num_devices < 1):
    raise ConfigError(f'num_devices={num_devices!r}: must be an integer >= 1')
  if 'seed' in config:
    _integer(0)('seed', config.seed)
  for name in ('plots', 'verbose', 'checkpoints', 'per_device_subnets'):
    if name in config:
      _boolean(name, config[name])
  if 'parallel' in config:
    _one_of(PARALLEL_MODES, 'parallel mode')('parallel', config.parallel)
  if config.get('max_checkpoints') is not None:
    _integer(1)('max_checkpoints', config.max_checkpoints)
  for name in ('resume', 'init'):
    path = config.get(name)
    if path is not None and not os.path.isdir(path):
      _fail(name, path, 'must be an existing workdir or checkpoint directory')
  method_cfg = _section(config, 'method')
  _check_method(method_cfg)
  stage_sizes = _check_model(_section(config, 'model'))
  _check_max_shortening('method.max_shortening', method_cfg.get('max_shortening'),
                        stage_sizes)
  _check_data(_section(config, 'data'), num_devices)
  _check_optim(_section(config, 'optim'))
  _check_durations(config)
  evals = config.get('evals')
  if evals is not None:
    if not isinstance(evals, _Section):
      _fail('evals', evals, 'must be a ConfigDict of evaluator dicts')
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
  if not _is_int(num_classes) or num_classes < 1:
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
