r"""Times one training step of every method against the plain (baseline) step, in one run.

  python -m experiments.bench_step --arch resnet56 --batch 128 --steps 5 --format json
  python -m experiments.bench_step --arch resnet20,resnet56,resnet110,resnet50 --batch 64 \
      --steps 3 --format markdown            # the speed table of docs/results.md
  python -m experiments.bench_step --dtype bfloat16 ...       # bf16 convolutions (GPU/TPU)
  python -m experiments.bench_step --arch resnet20 --shortcut projection --num_classes 100 \
      --method_overrides gkt.loops=1              # another codebase's shapes and settings
  python -m experiments.bench_step --dropped_block --arch resnet56,vit_ti,wrn16_4 --batch 8

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
With --dropped_block, no method is timed: per architecture, one row of a dropped block's cost
against a kept one in the compiled gradient of a train-mode forward with a traced keep mask
(the program every masked training pass runs). Each block's branch sits in `lax.cond`s (one
in the forward, one in the backward); the cost of a branch is the bytes its instructions
write (fusion, convolution, dot, copy and broadcast outputs; XLA's optimised program, so
fused elementwise work writes nothing). Bytes leave out the kept branch's arithmetic (its
convolutions and matmuls), which a dropped branch does not do. Deterministic: it reads the
compiled program and runs nothing. Columns
  dropped_over_kept     bytes written by the dropped branches / by the kept branches,
                        forward and backward, summed over the blocks (at most 0.25: exit
                        status 1 where an architecture exceeds it)
  forward_ratio, backward_ratio   the same for the forward and the backward conds alone
  dropped_bytes_per_block, kept_bytes_per_block   the sums over the blocks / the blocks
Ratios divide by the plain step of the same architecture, timed in the same process. kd is
ResKD's student step; a res-student's step (reskd) needs its trained chain and is not timed
here. Inputs are random images of CIFAR shape; masks come from the step key as in training, so
XLA cannot fold them away. Methods use their settings' defaults, with `--method_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
import re
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
from gkt_jax import evaluate, losses, methods, models
from gkt_jax.train import optim, reporting
from gkt_jax.train.step import init_state, make_train_step, step_key

_ARCH = flags.DEFINE_list('arch', ['resnet56'], 'Architectures (names in '
                          'gkt_jax.models.ARCHITECTURES), each with its own plain step to '
                          'divide by.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per method (after the first).')
_SIDE = flags.DEFINE_integer('image_size', 32, 'Square image side.')
_METHODS = flags.DEFINE_list('methods', ['baseline', 'stochastic_depth', 'layerdrop',
                                         'stimulative', 'gkt', 'sandwich', 'ekd_fws', 'kd'],
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
_DROPPED_BLOCK = flags.DEFINE_bool('dropped_block', False,
                                   "Measure a dropped block's cost against a kept one "
                                   '(bytes its branches write in the compiled gradient) '
                                   'instead of timing methods.')
_OVERRIDES = flags.DEFINE_list('method_overrides', [],
                               "Fields over a method's defaults, LABEL.FIELD=VALUE with LABEL "
                               'as in --methods, e.g. gkt.loops=1,stimulative.n_sub=2.')

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_compile_log: list[float] = []
MAX_DROPPED_OVER_KEPT = 0.25  # --dropped_block: the most a dropped block may cost


def _on_event(name, seconds, **kwargs):
  del kwargs
  if name in _COMPILE_EVENTS:
    _compile_log.append(seconds)


def frozen_networks(method, model, input_shape) -> dict | None:
  """Randomly initialised frozen networks for a method that needs trained ones (kd: a
  teacher of the benchmarked architecture); a step's cost does not depend on their weights."""
  sources = method.fixed_sources()
  if not sources:
    return None
  if set(sources) != {'teacher'}:
    raise app.UsageError(f'bench_step cannot build the frozen networks {sorted(sources)} of '
                         f'{method.name!r}: time it with experiments/reskd_pipeline.py')
  variables = model.init(jax.random.key(1), jnp.zeros((1,) + tuple(input_shape)), train=False)
  method.attach_fixed({'teacher': [(model, variables)]})
  return method.fixed_inputs()


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
                                      'optim': optim.section_defaults()})
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
  lines = [f'Machine: {reporting.machine()}; code {reporting.code_version()}; '
           f'batch {first["batch"]}, {first["steps"]} timed '
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


# Bytes per element of XLA's array types; an instruction writes the arrays of its output shape.
_ELEMENT_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2,
                  's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8,
                  'c128': 16}
_HLO_ARRAY = re.compile(r'\b(' + '|'.join(_ELEMENT_BYTES) + r')\[([\d,]*)\]')
_HLO_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+) \(.*\) -> .*\{$')
_HLO_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+ = (.*?) ([\w\-]+)\((.*)$')
# Instructions that write no array of their own (control flow: its computations write).
_WRITES_NOTHING = ('parameter', 'get-tuple-element', 'tuple', 'bitcast', 'constant',
                   'after-all', 'conditional', 'while', 'call')


def hlo_computations(hlo_text: str) -> dict[str, list[tuple[str, str, str]]]:
  """{computation name: [(output shape, opcode, operands and attributes), ...]} of an HLO
  module's text (`compiled.as_text()`)."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    header = _HLO_COMPUTATION.match(line)
    if header:
      current = computations.setdefault(header.group(1), [])
    elif line.startswith('}'):
      current = None
    elif current is not None and (instruction := _HLO_INSTRUCTION.match(line)):
      current.append(instruction.groups())
  return computations


def _array_bytes(shape: str) -> int:
  return sum(_ELEMENT_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d]))
             for dtype, dims in _HLO_ARRAY.findall(shape))


def _branches(attributes: str) -> list[str]:
  """The branch computations of a conditional, in branch-index order (a bool predicate's
  false branch first)."""
  listed = re.search(r'branch_computations=\{([^}]*)\}', attributes)
  if listed:
    return [name.strip().lstrip('%') for name in listed.group(1).split(',')]
  return [re.search(rf'{which}_computation=%?([\w.\-]+)', attributes).group(1)
          for which in ('false', 'true')]


def bytes_written(computations, name: str, memo: dict | None = None) -> int:
  """Bytes the instructions of computation `name` write; a nested conditional counts its
  largest branch, a while loop its body once, a call its computation."""
  memo = {} if memo is None else memo
  if name not in memo:
    total = 0
    for shape, opcode, attributes in computations.get(name, ()):
      if opcode == 'conditional':
        total += max(bytes_written(computations, b, memo) for b in _branches(attributes))
      elif opcode in ('while', 'call'):
        for callee in re.findall(r'(?:body|to_apply)=%?([\w.\-]+)', attributes):
          total += bytes_written(computations, callee, memo)
      elif opcode not in _WRITES_NOTHING:
        total += _array_bytes(shape)
    memo[name] = total
  return memo[name]


def cond_branch_bytes(hlo_text: str) -> list[dict]:
  """One dict per two-branch conditional of a compiled program: its JAX op name, whether it
  is in the backward ('transpose' in the name), and the bytes its false (`dropped`) and true
  (`kept`) branches write."""
  computations, memo, rows = hlo_computations(hlo_text), {}, []
  for instructions in computations.values():
    for _, opcode, attributes in instructions:
      if opcode != 'conditional' or len(branches := _branches(attributes)) != 2:
        continue
      op_name = re.search(r'op_name="([^"]*)"', attributes)
      op_name = op_name.group(1) if op_name else ''
      rows.append({'op_name': op_name, 'backward': 'transpose(' in op_name,
                   'dropped': bytes_written(computations, branches[0], memo),
                   'kept': bytes_written(computations, branches[1], memo)})
  return rows


def dropped_block_cost(arch: str, batch: int, side: int, channels: int = 3,
                       num_classes: int = 10, **fields) -> dict:
  """A dropped block's cost against a kept one (module docstring, --dropped_block) in the
  compiled gradient of the cross-entropy of `arch`'s train-mode forward with a traced keep
  mask, batch `batch` of side x side x channels images. `fields`: model fields."""
  model = models.build_model(arch, num_classes, **fields)
  images = jax.ShapeDtypeStruct((batch, side, side, channels), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  keep_mask = jax.ShapeDtypeStruct((model.num_blocks,), jnp.bool_)

  def loss(params, others, keep_mask, images, labels):
    (logits, _), _ = model.apply({**others, 'params': params}, images, keep_mask=keep_mask,
                                 train=True, mutable=['batch_stats'],
                                 rngs={'dropout': jax.random.key(0)})
    return jnp.mean(losses.cross_entropy(logits, labels))

  others = {k: v for k, v in variables.items() if k != 'params'}
  compiled = jax.jit(jax.grad(loss)).lower(variables['params'], others, keep_mask, images,
                                           labels).compile()
  conds = cond_branch_bytes(compiled.as_text())
  if not conds:
    raise ValueError(f'{arch}: no block of the compiled gradient sits in a conditional')

  def ratio(rows):
    return sum(r['dropped'] for r in rows) / max(sum(r['kept'] for r in rows), 1)

  blocks = model.num_blocks
  return {'arch': arch, 'batch': batch, 'image_shape': [side, side, channels],
          'backend': jax.default_backend(), 'blocks': blocks, 'conds': len(conds),
          'dropped_bytes_per_block': sum(r['dropped'] for r in conds) / blocks,
          'kept_bytes_per_block': sum(r['kept'] for r in conds) / blocks,
          'forward_ratio': ratio([r for r in conds if not r['backward']]),
          'backward_ratio': ratio([r for r in conds if r['backward']]),
          'dropped_over_kept': ratio(conds)}


def print_dropped_block_costs(rows: list[dict], output_format: str) -> None:
  """The --dropped_block rows as JSON lines, a text table or a markdown table."""
  if output_format == 'json':
    for row in rows:
      print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in row.items()}))
    return
  if output_format == 'markdown':
    print(f'Machine: {reporting.machine()}; code {reporting.code_version()}; '
          f'batch {rows[0]["batch"]}, '
          f'{rows[0]["image_shape"]} images; bytes written by the blocks\' branches in the '
          'compiled train-mode gradient.\n')
    print('| arch | blocks | dropped KiB/block | kept KiB/block | forward | backward | '
          'dropped / kept |\n|---|---|---|---|---|---|---|')
    for r in rows:
      print(f'| {r["arch"]} | {r["blocks"]} | {r["dropped_bytes_per_block"] / 2**10:.0f} | '
            f'{r["kept_bytes_per_block"] / 2**10:.0f} | {r["forward_ratio"]:.3f} | '
            f'{r["backward_ratio"]:.3f} | {r["dropped_over_kept"]:.3f} |')
    return
  print(f'batch {rows[0]["batch"]}, {rows[0]["image_shape"]} images, {reporting.machine()}')
  print(f'{"arch":9s} {"blocks":>6s} {"dropped KiB":>11s} {"kept KiB":>9s} {"forward":>7s} '
        f'{"backward":>8s} {"dropped/kept":>12s}')
  for r in rows:
    print(f'{r["arch"]:9s} {r["blocks"]:6d} {r["dropped_bytes_per_block"] / 2**10:11.0f} '
          f'{r["kept_bytes_per_block"] / 2**10:9.0f} {r["forward_ratio"]:7.3f} '
          f'{r["backward_ratio"]:8.3f} {r["dropped_over_kept"]:12.3f}')


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
  if _DROPPED_BLOCK.value:
    fields = dict(conv_impl=_CONV.value, dtype=jnp.dtype(_DTYPE.value))
    if _WIDTH.value != 1.0:
      fields['width_multiplier'] = _WIDTH.value
    if _SHORTCUT.value is not None:
      fields['shortcut'] = _SHORTCUT.value
    rows = [dropped_block_cost(arch, _BATCH.value, _SIDE.value, _CHANNELS.value,
                               _CLASSES.value, **fields) for arch in _ARCH.value]
    print_dropped_block_costs(rows, _FORMAT.value)
    over = [r['arch'] for r in rows if r['dropped_over_kept'] > MAX_DROPPED_OVER_KEPT]
    if over:
      print(f'error: a dropped block costs more than {MAX_DROPPED_OVER_KEPT} of a kept one '
            f'in {over}', file=sys.stderr)
      sys.exit(1)
    return
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
