"""The train step: state, initialisation and one jitted step over a ('data',) mesh.

One jitted step over a mesh of every device: the train state is replicated, the batch split
along axis 0; under jit, BatchNorm statistics are computed over the global batch (what one
large-batch step would do). The subnet draw of a step comes from the step key, so every
device runs the same subnet on its shard. The step's key is `fold_in(seed key, step)`: same
seed, same run.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gkt_jax import data as data_lib
from gkt_jax.train import run_settings, validate


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


def init_state(config, model, method, tx, image_shape) -> TrainState:
  key = jax.random.key(config.seed)
  init_key, loop_key = jax.random.split(key)
  dummy = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  variables = model.init(init_key, dummy, train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    method_state=method.init_state(), key=loop_key)


def replicate(tree, sharding):
  """Host or single-device values as global arrays with `sharding` (multi-process safe)."""

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = put(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(put, tree)


def step_key(state: TrainState) -> jax.Array:
  """The key of the step `state` is about to run (`Method.masks_run(step_key(state))` gives
  the masks it runs; 'pmap' with per-device subnets folds in the device index as well)."""
  return jax.random.fold_in(state.key, state.step)


def make_train_step(method, tx, schedule, mean, std, axis_name: str | None = None,
                    per_device_keys: bool = False, augment_pad: int | None = None):
  """The step (state, images uint8[B,H,W,C], labels int32[B], fixed=None, crops=None) ->
  (state, measurements); `fixed` (variables of fixed networks, `method.fixed_inputs()`)
  reaches the method as `batch['fixed']`; `crops` (int32[B, 3], `TrainBatches.get_for_device`)
  pad-crop-flips the images by `augment_pad` on the device before anything else.

  With `axis_name` (the 'pmap' mode, run inside `jax.shard_map`), the step sees one device's
  shard: BatchNorm normalises with per-device statistics, gradients and measurements are
  averaged over the axis before the update, and the running statistics kept are device 0's
  (PyTorch DDP broadcasts rank 0's buffers before every forward). `per_device_keys` then gives
  every device its own subnet draw (the step key folded with the device index).
  """

  def train_step(state: TrainState, images, labels, fixed=None, crops=None):
    if crops is not None:
      images = data_lib.device_pad_crop_flip(images, crops, pad=augment_pad)
    batch = {'images': data_lib.normalize(images, mean, std), 'labels': labels,
             'fixed': fixed}
    key = step_key(state)
    if axis_name is not None and per_device_keys:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    params, batch_stats = state.params, state.batch_stats
    if axis_name is not None:
      # Per-device copies: each device differentiates its own loss and updates its own BN
      # statistics (the canonical-backward conv's custom_vjp and the per-block conds need
      # inputs and outputs of the same device variance); the explicit pmean below is then
      # the one cross-device reduction.
      params, batch_stats = jax.lax.pcast((params, batch_stats), axis_name, to='varying')
      if fixed is not None:
        batch['fixed'] = jax.lax.pcast(fixed, axis_name, to='varying')
    grads, (batch_stats, method_state, measurements) = method.gradients(
        params, batch_stats, batch, key, state.method_state)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      # Running statistics: device 0's, as PyTorch DDP broadcasts rank 0's buffers.
      batch_stats = jax.tree.map(lambda x: _device_zero(x, axis_name), batch_stats)
      # Method state and measurements: float leaves averaged; integer and boolean ones
      # (counters, keep masks) taken from device 0, so dtypes and checkpoints do not change.
      method_state, measurements = jax.tree.map(
          lambda x: _pmean_or_first(x, axis_name), (method_state, measurements))
    with jax.named_scope('optimizer'):  # names the update in profiles (profile_step)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    measurements = dict(measurements, lr=schedule(state.step),
                        l2_grads=optax.tree.norm(grads), l2_params=optax.tree.norm(params))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, method_state=method_state)
    return new_state, measurements

  return train_step


def _device_zero(x, axis_name):
  """Device 0's value of x, made replicated by a psum of it and zeros (exact)."""
  wide = x.astype(jnp.int32) if x.dtype == bool else x
  first = jnp.where(jax.lax.axis_index(axis_name) == 0, wide, jnp.zeros_like(wide))
  return jax.lax.psum(first, axis_name).astype(x.dtype)


def _pmean_or_first(x, axis_name):
  if jnp.issubdtype(x.dtype, jnp.floating):
    return jax.lax.pmean(x, axis_name)
  return _device_zero(x, axis_name)


def parallel_mode(config) -> str:
  """config.parallel ('jit' unless set; run_settings.PARALLEL_MODES)."""
  return run_settings.read(config).parallel


def compile_train_step(config, mesh, method, tx, schedule, mean, std,
                       augment_pad: int | None = None):
  """The jitted step (state, images, labels, fixed, crops) for `config.parallel` ('jit' or
  'pmap') over `mesh`."""
  parallel = parallel_mode(config)
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P('data'))
  if parallel == 'jit':
    step = make_train_step(method, tx, schedule, mean, std, augment_pad=augment_pad)
  elif parallel == 'pmap':
    step = jax.shard_map(
        make_train_step(method, tx, schedule, mean, std, axis_name='data',
                        per_device_keys=run_settings.read(config).per_device_subnets or (
                            method.per_device_randomness and mesh.devices.size > 1),
                        augment_pad=augment_pad),
        mesh=mesh, in_specs=(P(), P('data'), P('data'), P(), P('data')),
        out_specs=(P(), P()))
  else:
    raise ValueError(f'config.parallel={parallel!r}: allowed {validate.PARALLEL_MODES}')
  return jax.jit(step, in_shardings=(replicated, sharded, sharded, replicated, sharded),
                 out_shardings=(replicated, replicated), donate_argnums=0)
