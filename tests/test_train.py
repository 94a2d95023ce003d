"""End to end: train_and_evaluate for a few steps of every method on digits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import absltest, parameterized

from experiments.configs import common
from gkt_jax.train import train_and_evaluate
import workers


def _smoke(method):
  config = common.get_config(method, 'digits', 'smoke')
  config.verbose = False
  return config


class TrainTest(parameterized.TestCase):

  @parameterized.parameters('baseline', 'stochastic_depth', 'stimulative', 'gkt')
  def test_smoke_run_writes_outputs(self, method):
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(_smoke(method), workdir)
    for name in ('config.json', 'metrics.jsonl', 'summary.json', 'plots/training_curves.png',
                 'plots/depth_accuracy.png'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'summary.json')) as f:
      on_disk = json.load(f)
    self.assertEqual(on_disk['method'], method)
    self.assertBetween(on_disk['full_accuracy'], 0.0, 1.0)
    for level in (1, 2, 3):
      self.assertBetween(on_disk[f'subnet_acc/level{level}'], 0.0, 1.0)
    self.assertTrue(on_disk['depth_curve'])
    self.assertEqual(summary['steps'], 4)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    train = [r for r in records if 'loss' in r]
    self.assertEqual([r['step'] for r in train], [2, 4])
    self.assertTrue(all(np.isfinite(r['loss']) for r in train))
    self.assertTrue(any('eval/full_accuracy' in r for r in records))
    if method == 'gkt':
      self.assertIn('kl/level3', train[-1])

  def test_same_seed_same_run(self):
    config = _smoke('gkt')
    config.evals = {'full': {'type': 'full'}}
    config.plots = False
    first = train_and_evaluate(config, self.create_tempdir().full_path)
    second = train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertEqual(first['full_accuracy'], second['full_accuracy'])

  def test_batch_not_divisible_by_devices_is_an_error(self):
    # Run in a subprocess with 4 fake devices: batch 66 does not split over them.
    code = ('from experiments.configs import common; from gkt_jax.train import '
            'train_and_evaluate; c = common.get_config("baseline", "digits", "smoke"); '
            'c.data.batch_size = 66; train_and_evaluate(c, "%s")'
            % self.create_tempdir().full_path)
    result = _run_with_devices(code, 4)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('config.data.batch_size=66: must be divisible by the 4 devices', result.stderr)


@pytest.mark.slow
class DemoRegressionTest(absltest.TestCase):
  """`make demo`'s run (about 2 minutes on 2 cores): GKT on digits reaches >= 0.95."""

  def test_gkt_digits_accuracy(self):
    config = common.get_config('gkt', 'digits')
    config.verbose = False
    summary = train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertGreaterEqual(summary['full_accuracy'], 0.95)


def _run_with_devices(code, devices):
  return subprocess.run([sys.executable, '-c', code], cwd=workers.REPO,
                        env=workers.device_env(devices), capture_output=True, text=True,
                        timeout=600)


if __name__ == '__main__':
  absltest.main()
