"""`train_and_evaluate(config, workdir)`: the method-agnostic training loop.

One jitted step over a ('data',) mesh of every device: the train state is replicated, the
batch split along axis 0; under jit, BatchNorm statistics are computed over the global batch
(what one large-batch step would do). The subnet draw of a step comes from the step key, so
every device runs the same subnet on its shard. The step's key is `fold_in(seed key, step)`:
same seed, same run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gkt_jax import data as data_lib
from gkt_jax import evaluate, methods, models, utils
from gkt_jax.train import optim, reporting


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  method_state: Any
  key: jax.Array


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def build(config: ml_collections.ConfigDict, dataset: data_lib.ArrayDataset):
  """The model and method a config describes, for a dataset."""
  model_cfg = dict(config.model)
  arch = model_cfg.pop('arch')
  model = models.build_model(arch, dataset.num_classes, **model_cfg)
  return model, methods.get_method(config.method, model)


def init_state(config, model, method, tx, image_shape) -> TrainState:
  key = jax.random.key(config.seed)
  init_key, loop_key = jax.random.split(key)
  dummy = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  variables = model.init(init_key, dummy, train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    method_state=method.init_state(), key=loop_key)


def make_train_step(method, tx, schedule, mean, std):
  """The step (state, images uint8[B,H,W,C], labels int32[B]) -> (state, measurements)."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)

  def train_step(state: TrainState, images, labels):
    batch = {'images': (images.astype(jnp.float32) / 255.0 - mean) / std, 'labels': labels}
    key = jax.random.fold_in(state.key, state.step)
    grads, (batch_stats, method_state, measurements) = method.gradients(
        state.params, state.batch_stats, batch, key, state.method_state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    measurements = dict(measurements, lr=schedule(state.step),
                        l2_grads=optax.tree.norm(grads), l2_params=optax.tree.norm(params))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, method_state=method_state)
    return new_state, measurements

  return train_step


def _scalars(measurements) -> dict[str, float]:
  return {k: float(v) for k, v in measurements.items() if np.ndim(v) == 0}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.method` on `config.data` and evaluates it; returns the summary dict.

  Writes to workdir: config.json, metrics.jsonl, summary.json and plots/*.png.
  """
  is_writer = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_writer:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    if os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
      os.remove(os.path.join(workdir, 'metrics.jsonl'))
  verbose = is_writer and config.get('verbose', True)

  dataset = data_lib.load_dataset(config.data.name, data_dir=config.data.get('dir'))
  model, method = build(config, dataset)
  mesh = make_mesh()
  num_devices = mesh.devices.size
  batch_size = int(config.data.batch_size)
  if batch_size % num_devices:
    raise ValueError(f'data.batch_size={batch_size} is not divisible by the {num_devices} '
                     'devices; use a multiple of the device count')
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P('data'))

  augment = dict(config.data.get('augment', {}) or {})
  batches = data_lib.TrainBatches(dataset.train_images, dataset.train_labels, batch_size,
                                  seed=config.seed, augment=augment or None)
  total_steps = utils.steps('total', config, batches.steps_per_epoch)
  if total_steps is None:
    raise ValueError('set total_steps or total_epochs in the config')
  log_every = utils.steps('log_every', config, batches.steps_per_epoch, default=50)
  eval_every = utils.steps('eval_every', config, batches.steps_per_epoch, default=total_steps)

  tx, schedule = optim.make_optimizer(config.optim, total_steps)
  state = init_state(config, model, method, tx, dataset.image_shape)
  state = jax.device_put(state, replicated)
  step_fn = jax.jit(make_train_step(method, tx, schedule, dataset.mean, dataset.std),
                    in_shardings=(replicated, sharded, sharded),
                    out_shardings=(replicated, replicated), donate_argnums=0)

  eval_batch = int(config.data.get('eval_batch_size', 500))
  eval_batch -= eval_batch % num_devices
  runner = evaluate.EvalRunner(model, method, dataset.test_images, dataset.test_labels,
                               mean=dataset.mean, std=dataset.std, batch_size=eval_batch,
                               data_sharding=sharded, replicated_sharding=replicated)
  recal_images = int(config.method.get('bn_recalibration_images', 0))
  evals_config = config.get('evals', {'full': {'type': 'full'}})

  def run_evals(final: bool) -> dict:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    if recal_images:
      recal = data_lib.normalize(dataset.train_images[:recal_images], dataset.mean, dataset.std)
      variables = evaluate.recalibrate_batch_stats(
          model, variables, np.array_split(recal, max(1, recal_images // batch_size)),
          momentum=model.bn_momentum)
    runner.variables = variables
    return evaluate.run_evaluators(runner, evals_config, final=final)

  writer = reporting.MetricWriter(workdir, enabled=is_writer)
  process_rows = slice(jax.process_index() * (batch_size // jax.process_count()),
                       (jax.process_index() + 1) * (batch_size // jax.process_count()))

  def device_batch(step):
    images, labels = batches.get(step)
    return (jax.make_array_from_process_local_data(sharded, images[process_rows]),
            jax.make_array_from_process_local_data(sharded, labels[process_rows]))

  if verbose:
    print(f'gkt_jax: {config.method.name} on {config.data.name} ({len(dataset.train_labels)} '
          f'train / {len(dataset.test_labels)} test images), {config.model.arch} '
          f'({model.num_blocks} blocks), {total_steps} steps of batch {batch_size} '
          f'({total_steps / batches.steps_per_epoch:.1f} epochs) on {num_devices} '
          f'{jax.default_backend()} device(s), {method.forwards_per_step()} forwards/step',
          flush=True)

  progress = reporting.Progress(total_steps, 0, batch_size, enabled=verbose)
  history = []
  compile_start = time.perf_counter()
  train_start = None
  intermediate_eval_seconds = 0.0
  pending = None  # measurements of the last step, pulled to the host only at log steps
  step = 0
  while step < total_steps:
    images, labels = device_batch(step)
    state, pending = step_fn(state, images, labels)
    step += 1
    if train_start is None:
      jax.block_until_ready(pending)
      compile_seconds = time.perf_counter() - compile_start
      if verbose:
        print(f'first step (compile + run) took {compile_seconds:.1f}s', flush=True)
      progress.start(step)
      train_start = time.perf_counter()
    if step % log_every == 0 or step == total_steps:
      values = _scalars(jax.device_get(pending))
      reporting.check_finite(step, values)
      values['img_per_sec'] = progress.rate(step)
      values['epoch'] = step / batches.steps_per_epoch
      writer.write(step, values)
      progress.line(step, {k: values[k] for k in ('loss', 'ce/full', 'ce/sampled', 'lr')
                           if k in values}, values['img_per_sec'])
    if step % eval_every == 0 and step != total_steps:
      eval_start = time.perf_counter()
      results = run_evals(final=False)
      eval_seconds = time.perf_counter() - eval_start
      progress.exclude(eval_seconds)
      intermediate_eval_seconds += eval_seconds
      history.append({'step': step, **results})
      writer.write(step, {f'eval/{k}': v for k, v in results.items()})
      if verbose:
        print(f'eval at step {step}: ' + ', '.join(
            f'{k} {v:.4f}' for k, v in results.items() if isinstance(v, float)), flush=True)
  jax.block_until_ready(state)
  # Training time of the steps after the first (compiled) one, evaluations excluded.
  train_seconds = (time.perf_counter() - (train_start or compile_start)
                   - intermediate_eval_seconds)

  if verbose:
    print('final evaluation ...', flush=True)
  eval_start = time.perf_counter()
  results = run_evals(final=True)
  history.append({'step': step, **results})
  writer.write(step, {f'eval/{k}': v for k, v in results.items()})
  steps_timed = max(total_steps - 1, 1)
  summary = {
      'method': config.method.name, 'dataset': config.data.name, 'arch': config.model.arch,
      'seed': config.seed, 'steps': total_steps,
      'epochs': total_steps / batches.steps_per_epoch, 'batch_size': batch_size,
      'num_devices': num_devices, 'backend': jax.default_backend(),
      'forwards_per_step': method.forwards_per_step(),
      **results,
      'best_full_accuracy': max(h['full_accuracy'] for h in history if 'full_accuracy' in h)
      if any('full_accuracy' in h for h in history) else None,
      'compile_seconds': compile_seconds,
      'train_seconds': train_seconds,
      'seconds_per_step': train_seconds / steps_timed,
      'eval_seconds': time.perf_counter() - eval_start,
  }
  if is_writer:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(reporting._jsonable(summary), f, indent=2)
    if config.get('plots', True):
      reporting.plot_run(workdir, summary)
  if verbose:
    print(reporting.final_table(summary), flush=True)
    print(f'wrote {workdir}/summary.json, metrics.jsonl, plots/', flush=True)
  return summary
