"""End to end: train_and_evaluate for a few steps of every method on digits."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from experiments.configs import common
from gkt_jax import data as data_lib
from gkt_jax import evaluate, masks, methods
from gkt_jax.train import export, train_and_evaluate
import workers


def _smoke(method):
  config = common.get_config(method, 'digits', 'smoke')
  config.verbose = False
  return config


class TrainTest(parameterized.TestCase):

  @parameterized.parameters('baseline', 'stochastic_depth', 'gkt')
  def test_smoke_run_writes_outputs(self, method):
    self._check_smoke_run(method)

  @pytest.mark.slow  # GKT's run covers the subnet-distillation path in the default suite
  def test_smoke_run_writes_outputs_stimulative(self):
    self._check_smoke_run('stimulative')

  def _check_smoke_run(self, method):
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(_smoke(method), workdir)
    for name in ('config.json', 'metrics.jsonl', 'summary.json', 'plots/training_curves.png',
                 'plots/depth_accuracy.png'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'summary.json')) as f:
      on_disk = json.load(f)
    self.assertEqual(on_disk['method'], method)
    # The accuracies recomputed from the final checkpoint on digits' 359 test images: the
    # deployed network's, and each level's mean over the evaluator's 2 nested chains
    # (bernoulli, drop_prob 0.2, seed 0). Equal numbers of correct images.
    with self.assertNoLogs('absl', level='WARNING'):  # loading a finished run is silent
      model, saved, saved_config = export.load_run(workdir)
    subnet_logits = jax.jit(methods.get_method(saved_config.method, model).subnet_logits)
    digits = data_lib.load_dataset('digits')
    images = data_lib.normalize(digits.test_images, digits.mean, digits.std)

    def num_correct(keep_mask):
      logits = subnet_logits(saved, images, keep_mask)
      return int(np.sum(np.argmax(logits, -1) == digits.test_labels))

    num_test = len(digits.test_labels)
    self.assertAlmostEqual(on_disk['full_accuracy'] * num_test, num_correct(np.ones(9, bool)),
                           delta=1e-6)
    chains = jax.vmap(lambda k: masks.sample_nested_subnets(k, (3, 3, 3), 3, drop_prob=0.2))(
        jax.random.split(jax.random.key(0), 2))
    for level in (1, 2, 3):
      self.assertAlmostEqual(on_disk[f'subnet_acc/level{level}'] * num_test,
                             np.mean([num_correct(c[level - 1]) for c in chains]), delta=1e-6)
    self.assertTrue(on_disk['depth_curve'])
    # The regime: the deployed network on all 1,438 training images, unaugmented.
    train_images = data_lib.normalize(digits.train_images, digits.mean, digits.std)
    train_correct = int(np.sum(np.argmax(subnet_logits(saved, train_images, np.ones(9, bool)),
                                         -1) == digits.train_labels))
    self.assertEqual(on_disk['train_accuracy_examples'], 1438)
    self.assertAlmostEqual(on_disk['train_accuracy'] * 1438, train_correct, delta=1e-6)
    self.assertAlmostEqual(on_disk['generalization_gap'],
                           on_disk['train_accuracy'] - on_disk['full_accuracy'], places=12)
    self.assertEqual(summary['steps'], 4)
    # The code that wrote it: this checkout's commit (a clone of the repository), or the
    # package version alone outside git.
    self.assertRegex(on_disk['code'], r'^\d+\.\d+\.\d+(\+git\.[0-9a-f]{7,}(\.dirty)?)?$')
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
    config.model.arch = 'resnet14'  # 3 droppable blocks; compiles faster than ResNet-20
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


class RecalibrationTest(absltest.TestCase):

  def test_recalibrated_statistics_serve_evaluation_only(self):
    # Stochastic depth deploys its branches scaled by p_i: the statistics are that network's.
    for name in ('stimulative', 'stochastic_depth'):
      with self.subTest(name):
        self._check_recalibration(name)

  def _check_recalibration(self, name):
    config = _smoke(name)
    config.method.bn_recalibration_images = 64
    config.total_steps, config.log_every_steps, config.eval_every_steps = 6, 6, 6
    config.optim.lr = 0.5  # training moves the running statistics away from the batch ones
    config.evals = {'full': {'type': 'full'}}
    config.plots = False
    workdir = self.create_tempdir().full_path
    summary, state = train_and_evaluate(config, workdir, return_state=True)
    model, saved, _ = export.load_run(workdir)
    deployed = methods.get_method(config.method, model).deployed_apply_kwargs()
    self.assertEqual(bool(deployed), name == 'stochastic_depth')
    # The train state and its checkpoint keep the statistics training produced.
    for a, b in zip(jax.tree.leaves(saved['batch_stats']), jax.tree.leaves(state.batch_stats)):
      np.testing.assert_array_equal(a, np.asarray(b))
    digits = data_lib.load_dataset('digits')
    raw, _ = digits.train_batches(64, seed=config.seed).get(0)
    recal_images = data_lib.normalize(raw, digits.mean, digits.std)
    per_batch = 64 // config.data.batch_size
    recalibrated = evaluate.recalibrate_batch_stats(
        model, saved, np.split(recal_images, max(per_batch, 1)), model.bn_momentum, deployed)
    test_images = data_lib.normalize(digits.test_images, digits.mean, digits.std)

    def accuracy(variables):
      logits = model.apply(variables, test_images, train=False, **deployed)[0]
      return float(np.mean(np.argmax(logits, -1) == digits.test_labels))

    self.assertNotEqual(accuracy(recalibrated), accuracy(saved))  # the test can tell
    self.assertAlmostEqual(summary['full_accuracy'], accuracy(recalibrated), places=6)


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
