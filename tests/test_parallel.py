"""Devices and processes: 1 vs 4 devices, 'pmap' vs 'jit', 2 processes vs 1 process."""

import os
import subprocess
import sys

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import pytest

from gkt_jax import methods, models
from gkt_jax.train import TrainState, checkpoint, step as step_lib, train_and_evaluate, trainer
import workers

STEPS = 3
# ResNet-14: 3 droppable blocks, so GKT draws subnets, and it compiles in about half the time
# of the smoke config's ResNet-20 (these tests compare devices and processes, not depths).
ARCH = 'resnet14'


def _overrides(method, **extra):
  return {'method': method, 'model.arch': ARCH, 'total_steps': STEPS, 'log_every_steps': 1,
          'eval_every_steps': STEPS, **extra}


class DevicesTest(parameterized.TestCase):

  def test_four_devices_match_one_in_jit_mode(self):
    self._four_devices_match_one('gkt')

  @pytest.mark.slow  # the plain step: a subset of GKT's (its full-network pass)
  def test_four_devices_match_one_in_jit_mode_baseline(self):
    self._four_devices_match_one('baseline')

  def _four_devices_match_one(self, method):
    # Same global batch: BatchNorm statistics over the global batch, one subnet draw per step.
    # One step, so the comparison is of one update (over several steps float32 rounding
    # differences of the two summation orders grow).
    results = {}
    for devices in (1, 4):
      tmp = self.create_tempdir().full_path
      results[devices] = workers.run(os.path.join(tmp, 'out.npz'), os.path.join(tmp, 'w'),
                                     _overrides(method, total_steps=1, eval_every_steps=1),
                                     devices=devices)
    np.testing.assert_allclose(results[4]['__losses__'], results[1]['__losses__'], rtol=1e-6)
    workers.assert_same_arrays(self, results[1], results[4], rtol=1e-5, atol=1e-6,
                               skip=('__step__', '__preempted__', '__losses__'))
    self.assertEqual(len(results[1]['__losses__']), 1)


class PmapModeTest(parameterized.TestCase):

  def _run(self, parallel, method='gkt', **extra):
    config = workers.smoke_config(method, {'model.arch': ARCH, 'total_steps': STEPS,
                                           'parallel': parallel, **extra})
    return train_and_evaluate(config, self.create_tempdir().full_path, return_state=True)

  def test_pmap_equals_jit_on_one_device(self):
    self._pmap_equals_jit('gkt')

  @parameterized.parameters('baseline', 'ekd_fws')
  @pytest.mark.slow  # the default suite keeps GKT's case, the one with subnet draws
  def test_pmap_equals_jit_on_one_device_other_methods(self, method):
    self._pmap_equals_jit(method)

  def _pmap_equals_jit(self, method):
    if jax.device_count() != 1:
      self.skipTest('runs in-process: needs exactly one device')
    (jit_summary, jit_state), (pmap_summary, pmap_state) = (
        self._run('jit', method), self._run('pmap', method))
    self.assertEqual(pmap_summary['parallel'], 'pmap')
    for a, b in zip(jax_leaves(jit_state), jax_leaves(pmap_state)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    self.assertAlmostEqual(jit_summary['full_accuracy'], pmap_summary['full_accuracy'])

  def test_pmap_mode_has_per_device_batch_norm(self):
    # The trainer's 'pmap' step on 4 devices (a subprocess) against single-device steps on
    # each quarter of the batch: BatchNorm normalises each quarter with its own statistics,
    # and the loss, accuracy and (SGD, lr 1) update are the quarters' means. The global
    # batch's loss ('jit' semantics) differs, so the comparison can tell the two apart.
    # The running statistics kept are device 0's (PyTorch DDP broadcasts rank 0's buffers).
    got = _run_in_four_devices(self)

    method, state, images, labels = _tiny_baseline()
    gradients = jax.jit(method.gradients)
    quarters = [gradients(state.params, state.batch_stats,
                          {'images': images[i:i + 4] / 255.0, 'labels': labels[i:i + 4]},
                          state.key, {}) for i in range(0, 16, 4)]
    want_loss = np.mean([float(m['loss']) for _, (_, _, m) in quarters])
    want_acc = np.mean([float(m['train_acc/full']) for _, (_, _, m) in quarters])
    want_params = jax.tree.map(lambda p, *g: p - sum(g) / 4, state.params,
                               *[g for g, _ in quarters])
    np.testing.assert_allclose(got['loss'], want_loss, rtol=1e-6)
    np.testing.assert_allclose(got['train_acc'], want_acc, rtol=1e-6)
    flat = jax.tree_util.tree_flatten_with_path(want_params)[0]
    self.assertEqual(sorted(k for k in got if k.startswith('params')),
                     sorted('params' + jax.tree_util.keystr(path) for path, _ in flat))
    for path, want in flat:
      np.testing.assert_allclose(got['params' + jax.tree_util.keystr(path)], want,
                                 rtol=1e-5, atol=1e-6)
    whole = gradients(state.params, state.batch_stats,
                      {'images': images / 255.0, 'labels': labels}, state.key, {})
    self.assertGreater(abs(float(whole[1][2]['loss']) - want_loss), 1e-3)
    stats = jax.tree_util.tree_flatten_with_path(quarters[0][1][0])[0]
    self.assertLen([k for k in got if k.startswith('batch_stats')], len(stats))
    for path, want in stats:
      np.testing.assert_allclose(got["batch_stats" + jax.tree_util.keystr(path)], want,
                                 rtol=1e-5, atol=1e-7)
    quarter1 = jax.tree.leaves(quarters[1][1][0])
    self.assertGreater(max(float(np.max(np.abs(a - b))) for (_, a), b in zip(stats, quarter1)),
                       1e-3)  # device 0's statistics are not another device's, nor their mean

  def test_per_device_subnets(self):
    # per_device_subnets: device d draws its subnets from fold_in(step key, d); the step's
    # loss is the mean of the devices' losses with their own draws, its masks device 0's.
    got = _run_in_four_devices(self, per_device_gkt=True)
    method, state, images, labels = _tiny_method(_TINY_GKT, (3, 3))
    gradients = jax.jit(method.gradients)
    step_key = jax.random.fold_in(state.key, 0)

    def quarter(d, key):
      batch = {'images': images[4 * d:4 * d + 4] / 255.0, 'labels': labels[4 * d:4 * d + 4]}
      return gradients(state.params, state.batch_stats, batch, key, {})[1][2]

    own = [quarter(d, jax.random.fold_in(step_key, d)) for d in range(4)]
    np.testing.assert_allclose(got['loss'], np.mean([float(m['loss']) for m in own]),
                               rtol=1e-6)
    shared = [quarter(d, step_key) for d in range(4)]
    self.assertGreater(abs(np.mean([float(m['loss']) for m in shared]) - float(got['loss'])),
                       1e-4)  # one draw for every device would give another loss
    draws = [np.asarray(method.masks_run(jax.random.fold_in(step_key, d))) for d in range(4)]
    self.assertGreater(len({m.tobytes() for m in draws}), 1)  # the devices' own draws


class MultiProcessTest(absltest.TestCase):

  def test_two_processes_match_one_process_of_four_devices(self):
    tmp = self.create_tempdir().full_path
    single = workers.run(os.path.join(tmp, 'single.npz'), os.path.join(tmp, 'single'),
                         _overrides('gkt'), devices=4)
    multi = workers.run_multiprocess(os.path.join(tmp, 'multi.npz'), os.path.join(tmp, 'multi'),
                                     _overrides('gkt'), processes=2, devices_per_process=2)
    # Each step's loss, to 1e-5: the same global batch, and (from step 2) the same update.
    self.assertLen(single['__losses__'], STEPS)
    np.testing.assert_allclose(multi['__losses__'], single['__losses__'], rtol=1e-5)
    # The arrays after 3 steps, looser: the two summation orders' float32 rounding grows in
    # ResNet-14's low-variance BatchNorm channels (measured: 4e-6 in biases after two steps,
    # 2e-4 in weights after three; 1 step agrees to rtol 1e-5, atol 1e-6, as in DevicesTest).
    workers.assert_same_arrays(self, single, multi, rtol=1e-2, atol=1e-3,
                               skip=('__step__', '__preempted__', '__losses__'))
    # Only process 0 writes the run's files.
    self.assertTrue(os.path.exists(os.path.join(tmp, 'multi', 'summary.json')))

  @pytest.mark.slow  # 40 s; the single-process bound is in the default suite
  def test_a_signal_to_one_process_stops_every_process_at_one_early_step(self):
    # SIGINT to process 0 alone (forwarded to JAX's preemption service), no log step for
    # 1000 steps: both processes save one checkpoint a few steps after the device's step 20.
    tmp = self.create_tempdir().full_path
    workdir = os.path.join(tmp, 'run')
    result = workers.run_multiprocess(
        os.path.join(tmp, 'out.npz'), workdir,
        {'method': 'baseline', 'total_steps': 400, 'log_every_steps': 1000,
         'eval_every_steps': 400, 'ckpt_every_steps': 1000,
         'signal_at_device_step': [20, 'SIGINT']}, processes=2, devices_per_process=1)
    self.assertTrue(result['__preempted__'])
    step = int(result['__step__'])
    self.assertBetween(step, 20, 20 + 2 * trainer.MAX_STEPS_IN_FLIGHT + 4)
    saved = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    read_only=True).all_steps()
    self.assertEqual(saved, [step])  # a save both processes joined (else it would hang)


def jax_leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]


_SGD = optax.sgd(1.0)


def _tiny_baseline():
  """(baseline method on a 2-block ResNet, its TrainState for SGD with lr 1, 16 images
  f32[16, 8, 8, 3] of integer values in 0..255, labels int32[16])."""
  return _tiny_method({'name': 'baseline'}, (1, 1))


# GKT on a net with droppable blocks: per-device draws differ.
_TINY_GKT = {'name': 'gkt', 'levels': 2, 'loops': 1, 'drop_prob': 0.5}


def _tiny_method(method_config: dict, stage_sizes):
  model = models.ResNet(stage_sizes=stage_sizes, stage_widths=(4, 8), num_classes=5,
                        stem_width=4, shortcut='pad')
  method = methods.get_method(ml_collections.ConfigDict(method_config), model)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.float32)
  labels = rng.integers(0, 5, (16,)).astype(np.int32)
  variables = model.init(jax.random.key(0), images[:1], train=False)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                     batch_stats=variables['batch_stats'],
                     opt_state=_SGD.init(variables['params']), method_state=method.init_state(),
                     key=jax.random.key(1))
  return method, state, images, labels


def run_tiny_pmap_step(out, per_device_gkt=False):
  """One 'pmap' step of `_tiny_baseline` (or, with per_device_gkt, of GKT on a (3, 3) net with
  per_device_subnets) over every device; writes its loss, accuracy, masks run, updated params
  and batch statistics to the npz `out` (run in a process with 4 devices)."""
  if per_device_gkt:
    method, state, images, labels = _tiny_method(_TINY_GKT, (3, 3))
  else:
    method, state, images, labels = _tiny_baseline()
  mesh = step_lib.make_mesh()
  if mesh.devices.size != 4:
    raise RuntimeError(f'{mesh.devices.size} devices: set {workers.device_env(4)["XLA_FLAGS"]}')
  config = ml_collections.ConfigDict({'parallel': 'pmap', 'per_device_subnets': per_device_gkt})
  step = step_lib.compile_train_step(config, mesh, method, _SGD, lambda step: 1.0,
                                     np.zeros(3), np.ones(3))
  sharded = NamedSharding(mesh, P('data'))
  state = step_lib.replicate(state, NamedSharding(mesh, P()))
  state, measurements = step(state, jax.device_put(images.astype(np.uint8), sharded),
                             jax.device_put(labels, sharded), {}, None)
  arrays = {name + jax.tree_util.keystr(path): np.asarray(leaf)
            for name, tree in (('params', state.params), ('batch_stats', state.batch_stats))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  np.savez(out, loss=np.asarray(measurements['loss']),
           train_acc=np.asarray(measurements['train_acc/full']),
           **arrays)


def _run_in_four_devices(test, per_device_gkt=False) -> dict:
  out = os.path.join(test.create_tempdir().full_path, 'pmap.npz')
  code = ('import sys; sys.path.insert(0, "tests"); import test_parallel; '
          f'test_parallel.run_tiny_pmap_step({out!r}, {per_device_gkt!r})')
  result = subprocess.run([sys.executable, '-c', code], cwd=workers.REPO,
                          env=workers.device_env(4), capture_output=True, text=True,
                          timeout=workers.TIMEOUT)
  test.assertEqual(result.returncode, 0, result.stderr[-3000:])
  return workers.load(out)


if __name__ == '__main__':
  absltest.main()
