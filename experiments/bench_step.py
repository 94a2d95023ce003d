r"""Times one training step of every method against the plain (baseline) step, in one run.

  python -m experiments.bench_step --arch resnet56 --batch 128 --steps 5 --format json
  python -m experiments.bench_step --arch resnet20,resnet56,resnet110,resnet50 --batch 64 \
      --steps 3 --format markdown            # the speed table of docs/results.md
  python -m experiments.bench_step --dtype bfloat16 ...       # bf16 convolutions (GPU/TPU)
  python -m experiments.bench_step --arch resnet20 --shortcut projection --num_classes 100 \
      --method_overrides gkt.loops=1              # another codebase's shapes and settings

Prints, per (architecture, method), a JSON line, a table row or a markdown row with
  seconds_per_step      mean over `--steps` steps after the compiled first one
  ratio_to_plain        seconds_per_step / the baseline's, measured in this same run
  flop_ratio_to_plain   forward FLOPs of the blocks the method's steps actually ran (the
                        masks of each step's key, `Method.masks_run`; for ekd_fws every
                        path of the classmate branch) over the plain step's; backward
                        FLOPs scale the same way, so
                        this is the step's FLOP ratio. A frozen network's pass (kd's
                        teacher: random weights of the same architecture) has no backward
                        and counts a third of its forward
  time_over_flop_ratio  ratio_to_plain / flop_ratio_to_plain (1.0: the skipping is as cheap
                        as the FLOPs say)
  compiles              traces of the step function over all its calls (1: one program
                        serves every subnet)
  compile_seconds       JAX's tracing + lowering + XLA compile time of that program
  images_per_second     batch / seconds_per_step
  xla_step_bytes        XLA's memory analysis of the compiled step: arguments + outputs +
                        temporaries - donated (aliased) buffers; device_peak_bytes_so_far:
                        the device's measured peak since the process started, where the
                        backend reports it (GPU, TPU): methods timed before count
Ratios divide by the plain step of the same architecture, timed in the same process. kd is
ResKD's student step; a res-student's step (reskd) needs its trained chain and is not timed
here. Inputs are random images of CIFAR shape; masks come from the step key as in training, so
XLA cannot fold them away. Methods use their settings' defaults, with `--method_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import monitoring

from experiments import cli
from experiments.configs import common
from gkt_jax import evaluate, methods, models
from gkt_jax.train import optim, reporting
from gkt_jax.train.trainer import init_state, make_train_step, step_key

_ARCH = flags.DEFINE_list('arch', ['resnet56'], 'Architectures (names in '
                          'gkt_jax.models.ARCHITECTURES), each with its own plain step to '
                          'divide by.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per method (after the first).')
_SIDE = flags.DEFINE_integer('image_size', 32, 'Square image side.')
_METHODS = flags.DEFINE_list('methods', ['baseline', 'stochastic_depth', 'stimulative', 'gkt',
                                         'ekd_fws', 'kd'],
                             'Methods, or variants of experiments/configs/common.VARIANTS '
                             '(e.g. stimulative_stpp, gkt_geometric), to time; the baseline '
                             'is always timed first.')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json', 'markdown'],
                            'A text table, one JSON line per row, or a markdown table.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'Convolution compute dtype (parameters, BN and losses stay f32).')
_CONV = flags.DEFINE_string('conv_impl', 'auto', "Convolution: 'auto', 'xla', 'canonical'.")
_WIDTH = flags.DEFINE_float('width_multiplier', 1.0, 'Channel width multiplier.')
_CHANNELS = flags.DEFINE_integer('channels', 3, 'Input channels (1 for Fashion-MNIST).')
_SHORTCUT = flags.DEFINE_enum('shortcut', None, ['pad', 'projection'],
                              "ResNets' shortcut (default: the architecture's own, 'pad' for "
                              "CIFAR ResNets, 'projection' for resnet18/34/50).")
_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Classifier outputs (e.g. 100: CIFAR-100).')
_OVERRIDES = flags.DEFINE_list('method_overrides', [],
                               "Fields over a method's defaults, LABEL.FIELD=VALUE with LABEL "
                               'as in --methods, e.g. gkt.loops=1,stimulative.n_sub=2.')

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_compile_log: list[float] = []


def _on_event(name, seconds, **kwargs):
  del kwargs
  if name in _COMPILE_EVENTS:
    _compile_log.append(seconds)


def frozen_networks(method, model, input_shape) -> dict | None:
  """Randomly initialised frozen networks for a method that needs trained ones (kd: a
  teacher of the benchmarked architecture); a step's cost does not depend on their weights."""
  sources = method.frozen_sources()
  if not sources:
    return None
  if set(sources) != {'teacher'}:
    raise app.UsageError(f'bench_step cannot build the frozen networks {sorted(sources)} of '
                         f'{method.name!r}: time it with experiments/reskd_pipeline.py')
  variables = model.init(jax.random.key(1), jnp.zeros((1,) + tuple(input_shape)), train=False)
  method.attach_frozen({'teacher': [(model, variables)]})
  return method.frozen_inputs()


def method_overrides(items, names) -> dict[str, dict]:
  """{label: {field: value}} from --method_overrides items 'LABEL.FIELD=VALUE', each value
  of its field's default type (checked later by the method's settings)."""
  assignments: dict[str, list[str]] = {}
  for item in items:
    label, _, assignment = item.partition('.')
    if label not in names or '=' not in assignment:
      raise app.UsageError(f'--method_overrides: {item!r} is not LABEL.FIELD=VALUE with LABEL '
                           f'one of --methods {tuple(names)}')
    assignments.setdefault(label, []).append(assignment)
  out = {}
  for label, items in assignments.items():
    method_cls = methods.REGISTRY[common.VARIANTS.get(label, (label, {}))[0]]
    try:
      parsed = common.parse_arg(','.join(items), **dataclasses.asdict(method_cls.Settings()))
    except ValueError as e:
      raise app.UsageError(f'--method_overrides: {e}') from None
    # Only the fields given: the others keep the variant's values (e.g. ST++'s switches).
    out[label] = {k: parsed[k] for k in (item.partition('=')[0] for item in items)}
  return out


def build_step(name: str, arch: str, batch: int, side: int, conv_impl: str = 'auto',
               width: float = 1.0, channels: int = 3, dtype: str = 'float32', *,
               shortcut: str | None = None, num_classes: int = 10,
               overrides: dict | None = None):
  """One method's training step as bench_step times it: returns (step_impl, method, state,
  args) with step_impl(state, *args) -> (state, measurements); args are random uint8 images
  and labels in [0, num_classes) (and the frozen networks' variables for kd). `overrides`:
  method fields over the variant's."""
  method, extra = common.VARIANTS.get(name, (name, {}))
  config = ml_collections.ConfigDict({'seed': 0,
                                      'method': {**common.method_fields(method), **extra,
                                                 **(overrides or {})},
                                      'optim': dict(lr=0.1, momentum=0.9, nesterov=True,
                                                    weight_decay=5e-4, schedule='cosine')})
  fields = dict(conv_impl=conv_impl, dtype=jnp.dtype(dtype))
  if width != 1.0:
    fields['width_multiplier'] = width
  if shortcut is not None:
    fields['shortcut'] = shortcut
  plain = models.build_model(arch, num_classes, **fields)
  method_cls = methods.REGISTRY[method]
  settings = method_cls.read_settings(config.method)
  if name == 'kd':  # no trained run to name: frozen_networks gives the teacher random weights
    settings = dataclasses.replace(settings, teacher='(random weights of the same architecture)')
  method = method_cls.build(settings, plain)
  input_shape = (side, side, channels)
  frozen = frozen_networks(method, plain, input_shape)
  tx, schedule = optim.make_optimizer(config.optim, 1000)
  state = init_state(config, method.model, method, tx, input_shape)  # e.g. EKD's branch
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch,) + input_shape, dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, num_classes, (batch,), dtype=np.int32))
  step_impl = make_train_step(method, tx, schedule, np.zeros(channels), np.ones(channels))
  args = (images, labels) + ((frozen,) if frozen is not None else ())
  return step_impl, method, state, args


def step_flops(method, input_shape, masks_run) -> float:
  """FLOPs per example of one step in units of forward FLOPs, counting a trained pass as
  forward + backward (3 forwards' worth) over 3, and a frozen network's pass (kd's teacher)
  as its forward alone: forward-equivalent FLOPs, comparable to the plain step's forward."""
  flops = method.step_forward_flops(input_shape, masks_run)
  for nets in (getattr(method, 'frozen_models', None) or {}).values():
    for net in nets:
      fixed, per_block = evaluate.block_flops(net, input_shape)
      flops += (fixed + per_block.sum()) / 3
  return float(flops)


def _conv_impl_name(conv_impl: str) -> str:
  """The convolution `conv_impl` resolves to in the benchmarked ResNets (default
  block_barriers), e.g. 'canonical' on CPU, where every block sits in a cond, masked or not;
  'xla unmasked / canonical masked' where the two differ."""
  plain = models.build_model('resnet20', 10, conv_impl=conv_impl)
  unmasked = plain._checked_settings(None, None)[0]  # pylint: disable=protected-access
  masked = models.conv.resolve_impl(conv_impl, masked=True)
  return unmasked if unmasked == masked else f'{unmasked} unmasked / {masked} masked'


def bench_method(name: str, arch: str, batch: int, steps: int, side: int,
                 conv_impl: str, width: float = 1.0, channels: int = 3,
                 dtype: str = 'float32', **model_and_method) -> dict:
  """Times `steps` steps of one method; returns its measurements (ratios filled later).
  `model_and_method`: build_step's shortcut, num_classes and overrides."""
  step_impl, method, state, args = build_step(name, arch, batch, side, conv_impl, width,
                                              channels, dtype, **model_and_method)
  traces = [0]

  def counted_step(state, *args):
    traces[0] += 1
    return step_impl(state, *args)

  step_fn = jax.jit(counted_step, donate_argnums=0)
  # The masks each step runs, from its key (not from the step's outputs).
  masks_of = jax.jit(lambda state: method.masks_run(step_key(state)))
  masks_run = []
  jax.block_until_ready((state, args))
  masks_run.append(np.asarray(masks_of(state)))
  _compile_log.clear()
  t0 = time.perf_counter()
  state, measurements = step_fn(state, *args)
  jax.block_until_ready(measurements)
  first = time.perf_counter() - t0
  compile_seconds = sum(_compile_log)
  times = []
  for _ in range(steps):
    masks_run.append(np.asarray(masks_of(state)))
    t0 = time.perf_counter()
    state, measurements = step_fn(state, *args)
    jax.block_until_ready(measurements)
    times.append(time.perf_counter() - t0)
  input_shape = (side, side, channels)
  fixed, per_block = evaluate.block_flops(method.model, input_shape)
  flops = np.mean([step_flops(method, input_shape, m) for m in masks_run])
  memory = step_memory(step_fn, state, args)
  return {
      'method': name, 'arch': arch, 'width_multiplier': width, 'dtype': dtype, 'batch': batch,
      'image_shape': list(input_shape), 'steps': steps,
      'shortcut': getattr(method.model, 'shortcut', None),
      'num_classes': model_and_method.get('num_classes', 10),
      'overrides': dict(model_and_method.get('overrides') or {}),
      'backend': jax.default_backend(), 'device_kind': jax.devices()[0].device_kind,
      'conv_impl': _conv_impl_name(conv_impl),
      'seconds_per_step': float(np.mean(times)), 'median_seconds': float(np.median(times)),
      'first_step_seconds': first, 'forwards_per_step': method.forwards_per_step(),
      'flops_per_example': flops, 'plain_flops_per_example': float(fixed + per_block.sum()),
      'compiles': traces[0], 'compile_seconds': compile_seconds,
      'images_per_second': batch / float(np.mean(times)), **memory,
  }


def step_memory(step_fn, state, args) -> dict:
  """XLA's memory analysis of the compiled step (arguments + outputs + temporaries, less
  donated buffers), and the device's measured peak where the backend reports one (GPU/TPU).
  `step_fn` is the jitted step already run on these shapes: lowering it again hits JAX's
  trace and compilation caches instead of compiling a second time."""
  out = {}
  analysis = step_fn.lower(state, *args).compile().memory_analysis()
  if analysis is not None:
    out['xla_step_bytes'] = int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    out['xla_temp_bytes'] = int(analysis.temp_size_in_bytes)
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:  # the process's peak so far: methods timed earlier count
    out['device_peak_bytes_so_far'] = int(stats['peak_bytes_in_use'])
  return out


def bench_arch(arch: str, names, overrides: dict | None = None) -> list[dict]:
  """Every method of `names` on one architecture; the first (the baseline) is the plain step
  the ratios divide by, timed in the same process. `overrides`: {label: method fields}."""
  rows = []
  for name in names:
    row = bench_method(name, arch, _BATCH.value, _STEPS.value, _SIDE.value, _CONV.value,
                       _WIDTH.value, _CHANNELS.value, _DTYPE.value, shortcut=_SHORTCUT.value,
                       num_classes=_CLASSES.value, overrides=(overrides or {}).get(name))
    plain = rows[0] if rows else row
    row['ratio_to_plain'] = row['seconds_per_step'] / plain['seconds_per_step']
    row['flop_ratio_to_plain'] = row['flops_per_example'] / plain['plain_flops_per_example']
    row['time_over_flop_ratio'] = row['ratio_to_plain'] / row['flop_ratio_to_plain']
    row['compile_ratio_to_plain'] = row['compile_seconds'] / plain['compile_seconds']
    rows.append(row)
    if _FORMAT.value == 'json':
      print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in row.items()}), flush=True)
    else:
      print(f'  {arch} {name}: {row["seconds_per_step"]:.3f} s/step', file=sys.stderr,
            flush=True)
  return rows


def markdown(rows: list[dict]) -> str:
  """One markdown table of every row, with the run's settings above it."""
  first = rows[0]
  overrides = {r['method']: r['overrides'] for r in rows if r.get('overrides')}
  lines = [f'Machine: {reporting.machine()}; batch {first["batch"]}, {first["steps"]} timed '
           f'steps, {first["image_shape"]} images, width x{first["width_multiplier"]:g}, '
           f'{first["dtype"]}, conv {first["conv_impl"]}, shortcut {first.get("shortcut")}, '
           f'{first.get("num_classes", 10)} classes'
           + (f', method overrides {overrides}' if overrides else '') + '.', '',
           '| arch | method | s/step | images/s | time vs plain | FLOPs vs plain | '
           'time/FLOPs | compiles | compile s (vs plain) | XLA step MiB |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["arch"]} | {r["method"]} | {r["seconds_per_step"]:.3f} | '
        f'{r["images_per_second"]:.0f} | {r["ratio_to_plain"]:.2f} | '
        f'{r["flop_ratio_to_plain"]:.2f} | {r["time_over_flop_ratio"]:.2f} | {r["compiles"]} | '
        f'{r["compile_seconds"]:.1f} ({r["compile_ratio_to_plain"]:.2f}x) | '
        f'{r.get("xla_step_bytes", 0) / 2**20:.0f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  monitoring.register_event_duration_secs_listener(_on_event)
  names = ['baseline'] + [m for m in _METHODS.value if m != 'baseline']
  allowed = tuple(common.VARIANTS) + ('kd',)
  for name in names:
    if name not in allowed:
      raise app.UsageError(f'--methods: {name!r} is not one of {allowed} (a ResKD '
                           'res-student needs its trained chain: see '
                           'experiments/reskd_pipeline.py)')
  for arch in _ARCH.value:
    if arch not in models.ARCHITECTURES:
      raise app.UsageError(f'--arch: {arch!r} is not one of {tuple(models.ARCHITECTURES)}')
  overrides = method_overrides(_OVERRIDES.value, names)
  rows = [row for arch in _ARCH.value for row in bench_arch(arch, names, overrides)]
  if _FORMAT.value == 'markdown':
    print(markdown(rows))
  elif _FORMAT.value == 'table':
    print(f'batch {_BATCH.value}, {_STEPS.value} timed steps, {reporting.machine()}')
    print(f'{"arch":9s} {"method":18s} {"s/step":>8s} {"img/s":>7s} {"ratio":>6s} '
          f'{"FLOPs":>6s} {"t/FLOP":>6s} {"compiles":>8s} {"compile s":>9s} {"x plain":>7s} '
          f'{"step MB":>8s}')
    for r in rows:
      print(f'{r["arch"]:9s} {r["method"]:18s} {r["seconds_per_step"]:8.3f} '
            f'{r["images_per_second"]:7.0f} {r["ratio_to_plain"]:6.2f} '
            f'{r["flop_ratio_to_plain"]:6.2f} {r["time_over_flop_ratio"]:6.2f} '
            f'{r["compiles"]:8d} {r["compile_seconds"]:9.1f} {r["compile_ratio_to_plain"]:7.2f} '
            f'{r.get("xla_step_bytes", 0) / 2**20:8.1f}')


if __name__ == '__main__':
  app.run(main)
