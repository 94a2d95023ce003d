r"""Times one training step of every method against the plain (baseline) step, in one run.

  python -m experiments.bench_step --arch resnet56 --batch 128 --steps 5 --json

Prints, per method, a JSON line (or a table row) with
  seconds_per_step      mean over `--steps` steps after the compiled first one
  ratio_to_plain        seconds_per_step / the baseline's, measured in this same run
  flop_ratio_to_plain   forward FLOPs of the blocks the method's steps actually ran (from the
                        masks each step reports; for ekd_fws every path of the classmate
                        branch) over the plain step's; backward FLOPs scale the same way, so
                        this is the step's FLOP ratio
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
Inputs are random images of CIFAR shape; masks come from the step key as in training, so
XLA cannot fold them away. Methods use their config defaults (`experiments/configs/common`).
"""

from __future__ import annotations

import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import monitoring

from experiments.configs import common
from gkt_jax import evaluate, methods, models
from gkt_jax.train import optim
from gkt_jax.train.trainer import init_state, make_train_step

_ARCH = flags.DEFINE_string('arch', 'resnet56', 'Architecture (see gkt_jax.models.ARCHS).')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per method (after the first).')
_SIDE = flags.DEFINE_integer('image_size', 32, 'Square image side.')
_METHODS = flags.DEFINE_list('methods', ['baseline', 'stochastic_depth', 'stimulative', 'gkt',
                                         'ekd_fws'],
                             'Methods to time; the baseline is always timed first.')
_JSON = flags.DEFINE_bool('json', False, 'One JSON line per method instead of a table.')
_CONV = flags.DEFINE_string('conv_impl', 'auto', "Convolution: 'auto', 'xla', 'canonical'.")
_WIDTH = flags.DEFINE_float('width_multiplier', 1.0, 'Channel width multiplier.')
_CHANNELS = flags.DEFINE_integer('channels', 3, 'Input channels (1 for Fashion-MNIST).')

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_compile_log: list[float] = []


def _on_event(name, seconds, **kwargs):
  del kwargs
  if name in _COMPILE_EVENTS:
    _compile_log.append(seconds)


def bench_method(name: str, arch: str, batch: int, steps: int, side: int,
                 conv_impl: str, width: float = 1.0, channels: int = 3) -> dict:
  """Times `steps` steps of one method; returns its measurements (ratios filled later)."""
  config = ml_collections.ConfigDict({'seed': 0, 'method': common.METHODS[name],
                                      'optim': dict(lr=0.1, momentum=0.9, nesterov=True,
                                                    weight_decay=5e-4, schedule='cosine')})
  method = methods.get_method(config.method, models.build_model(
      arch, 10, conv_impl=conv_impl, width_multiplier=width))
  model = method.model  # e.g. with EKD's classmate branch
  tx, schedule = optim.make_optimizer(config.optim, 1000)
  state = init_state(config, model, method, tx, (side, side, channels))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch, side, side, channels), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, (batch,), dtype=np.int32))
  traces = [0]
  step_impl = make_train_step(method, tx, schedule, np.zeros(channels), np.ones(channels))

  def counted_step(state, images, labels):
    traces[0] += 1
    return step_impl(state, images, labels)

  step_fn = jax.jit(counted_step, donate_argnums=0)
  jax.block_until_ready((state, images, labels))
  _compile_log.clear()
  t0 = time.perf_counter()
  state, measurements = step_fn(state, images, labels)
  jax.block_until_ready(measurements)
  first = time.perf_counter() - t0
  compile_seconds = sum(_compile_log)
  masks_run = [np.asarray(measurements['masks_run'])]
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, measurements = step_fn(state, images, labels)
    jax.block_until_ready(measurements)
    times.append(time.perf_counter() - t0)
    masks_run.append(np.asarray(measurements['masks_run']))
  fixed, per_block = evaluate.block_flops(model, (side, side, channels))
  flops = np.mean([method.step_forward_flops((side, side, channels), m) for m in masks_run])
  memory = step_memory(step_impl, state, images, labels)
  return {
      'method': name, 'arch': arch, 'width_multiplier': width, 'batch': batch,
      'image_shape': [side, side, channels], 'steps': steps,
      'backend': jax.default_backend(), 'conv_impl': models.conv.resolve_impl(conv_impl),
      'seconds_per_step': float(np.mean(times)), 'median_seconds': float(np.median(times)),
      'first_step_seconds': first, 'forwards_per_step': method.forwards_per_step(),
      'flops_per_example': float(flops), 'plain_flops_per_example': float(fixed + per_block.sum()),
      'compiles': traces[0], 'compile_seconds': compile_seconds,
      'images_per_second': batch / float(np.mean(times)), **memory,
  }


def step_memory(step_impl, state, images, labels) -> dict:
  """XLA's memory analysis of the compiled step (arguments + outputs + temporaries, less
  donated buffers), and the device's measured peak where the backend reports one (GPU/TPU)."""
  out = {}
  analysis = jax.jit(step_impl, donate_argnums=0).lower(state, images, labels).compile()
  analysis = analysis.memory_analysis()
  if analysis is not None:
    out['xla_step_bytes'] = int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    out['xla_temp_bytes'] = int(analysis.temp_size_in_bytes)
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:  # the process's peak so far: methods timed earlier count
    out['device_peak_bytes_so_far'] = int(stats['peak_bytes_in_use'])
  return out


def main(argv):
  del argv
  monitoring.register_event_duration_secs_listener(_on_event)
  names = ['baseline'] + [m for m in _METHODS.value if m != 'baseline']
  for name in names:
    if name not in common.METHODS or name in common.CHAIN_METHODS:
      raise app.UsageError(f'--methods: {name!r} is not one of '
                           f'{tuple(m for m in common.METHODS if m not in common.CHAIN_METHODS)}'
                           ' (kd and reskd need trained frozen networks: see '
                           'experiments/reskd_pipeline.py)')
  rows = []
  for name in names:
    row = bench_method(name, _ARCH.value, _BATCH.value, _STEPS.value, _SIDE.value,
                       _CONV.value, _WIDTH.value, _CHANNELS.value)
    plain = rows[0] if rows else row
    row['ratio_to_plain'] = row['seconds_per_step'] / plain['seconds_per_step']
    row['flop_ratio_to_plain'] = row['flops_per_example'] / plain['plain_flops_per_example']
    row['time_over_flop_ratio'] = row['ratio_to_plain'] / row['flop_ratio_to_plain']
    row['compile_ratio_to_plain'] = row['compile_seconds'] / plain['compile_seconds']
    rows.append(row)
    if _JSON.value:
      print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in row.items()}), flush=True)
  if not _JSON.value:
    print(f'{_ARCH.value}, batch {_BATCH.value}, {_STEPS.value} timed steps, '
          f'{jax.default_backend()} ({jax.devices()[0].device_kind})')
    print(f'{"method":18s} {"s/step":>8s} {"img/s":>7s} {"ratio":>6s} {"FLOPs":>6s} '
          f'{"t/FLOP":>6s} {"compiles":>8s} {"compile s":>9s} {"x plain":>7s} {"step MB":>8s}')
    for r in rows:
      print(f'{r["method"]:18s} {r["seconds_per_step"]:8.3f} {r["images_per_second"]:7.0f} '
            f'{r["ratio_to_plain"]:6.2f} {r["flop_ratio_to_plain"]:6.2f} '
            f'{r["time_over_flop_ratio"]:6.2f} {r["compiles"]:8d} {r["compile_seconds"]:9.1f} '
            f'{r["compile_ratio_to_plain"]:7.2f} {r.get("xla_step_bytes", 0) / 2**20:8.1f}')


if __name__ == '__main__':
  app.run(main)
