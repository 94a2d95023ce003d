"""Devices and processes: 1 vs 4 devices, 'pmap' vs 'jit', 2 processes vs 1 process."""

import os

from absl.testing import absltest, parameterized
import jax
import numpy as np
import pytest

from gkt_jax.train import train_and_evaluate
import workers

STEPS = 3


def _overrides(method, **extra):
  return {'method': method, 'total_steps': STEPS, 'log_every_steps': 1,
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
    config = workers.smoke_config(method, dict(total_steps=STEPS, parallel=parallel, **extra))
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
    # On 2 devices 'pmap' normalises each half of the batch with its own statistics, so it
    # differs from 'jit' (global statistics); on 1 device (above) the two agree.
    results = {}
    for parallel in ('jit', 'pmap'):
      tmp = self.create_tempdir().full_path
      results[parallel] = workers.run(
          os.path.join(tmp, 'out.npz'), os.path.join(tmp, 'w'),
          _overrides('baseline', parallel=parallel), devices=2)
    for result in results.values():
      self.assertTrue(np.all(np.isfinite(result['__losses__'])))
    self.assertFalse(np.allclose(results['pmap']['__losses__'][0],
                                 results['jit']['__losses__'][0], rtol=1e-6, atol=0))


class MultiProcessTest(absltest.TestCase):

  def test_two_processes_match_one_process_of_four_devices(self):
    tmp = self.create_tempdir().full_path
    single = workers.run(os.path.join(tmp, 'single.npz'), os.path.join(tmp, 'single'),
                         _overrides('gkt'), devices=4)
    multi = workers.run_multiprocess(os.path.join(tmp, 'multi.npz'), os.path.join(tmp, 'multi'),
                                     _overrides('gkt'), processes=2, devices_per_process=2)
    np.testing.assert_allclose(multi['__losses__'], single['__losses__'], rtol=1e-5)
    workers.assert_same_arrays(self, single, multi, rtol=1e-5, atol=1e-6,
                               skip=('__step__', '__preempted__', '__losses__'))
    # Only process 0 writes the run's files.
    self.assertTrue(os.path.exists(os.path.join(tmp, 'multi', 'summary.json')))


def jax_leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]


if __name__ == '__main__':
  absltest.main()
