"""The results pipeline (experiments/reproduce.py) on digits: runs, resumes, reports."""

import json
import os

from absl.testing import absltest
import pytest

from experiments import reproduce
from gkt_jax import evaluate, models


class ReproduceTest(absltest.TestCase):

  def _run(self, labels, seeds, reskd=False):
    root = self.create_tempdir().full_path
    docs = os.path.join(root, 'docs')
    reproduce.run_suite('digits', root, seeds, labels, total_steps=2, reskd=reskd)
    return root, docs, reproduce.report('digits', root, docs, seeds, labels)

  def test_suite_cells_report_and_rerun(self):
    root, docs, text = self._run(['baseline', 'ekd_fws'], (0, 1))
    self.assertIn('| baseline | ', text)
    self.assertIn('| ekd_fws | ', text)
    self.assertIn('2 steps', text)
    with open(os.path.join(docs, 'digits.json')) as f:
      stats = json.load(f)
    self.assertEqual(stats['ekd_fws']['seeds'], [0, 1])
    self.assertLen(stats['ekd_fws']['diff_vs_baseline'], 2)
    for s in (0, 1):  # the paired difference is of the same seed
      with open(os.path.join(root, 'digits', 'ekd_fws', f'seed{s}', 'summary.json')) as f:
        ekd = json.load(f)['full_accuracy']
      with open(os.path.join(root, 'digits', 'baseline', f'seed{s}', 'summary.json')) as f:
        base = json.load(f)['full_accuracy']
      self.assertAlmostEqual(stats['ekd_fws']['diff_vs_baseline'][s], ekd - base)
    self.assertTrue(os.path.exists(os.path.join(docs, 'digits_depth.png')))
    # Training FLOPs: 3 x steps x batch x the forward FLOPs of the step's passes.
    suite = reproduce.SUITES['digits']
    config = reproduce.run_config(suite, 'baseline', 0)
    plain = models.build_model('resnet20', 10)
    forward = evaluate.forward_flops(plain, (8, 8, 1))
    self.assertAlmostEqual(stats['baseline']['train_flops'],
                           3 * 2 * config.data.batch_size * forward, delta=1.0)
    ekd = evaluate.forward_flops(models.with_classmates(plain, 0.2), (8, 8, 1),
                                 classmates=True)
    self.assertAlmostEqual(stats['ekd_fws']['train_flops'] / stats['baseline']['train_flops'],
                           ekd / forward, places=9)
    self.assertIn('train FLOPs', text)
    self.assertIn('best deletion - full', text)
    # Same data order across methods: the seed alone fixes the batches.
    cfgs = [reproduce.run_config(reproduce.SUITES['digits'], l, 1) for l in reproduce.VARIANTS]
    self.assertLen({(c.seed, c.data.batch_size, c.total_epochs, c.optim.to_json())
                    for c in cfgs}, 1)
    # A finished suite is not trained again.
    before = os.path.getmtime(os.path.join(root, 'digits', 'baseline', 'seed0', 'summary.json'))
    reproduce.run_suite('digits', root, (0,), ['baseline'], total_steps=2, reskd=False)
    self.assertEqual(before, os.path.getmtime(
        os.path.join(root, 'digits', 'baseline', 'seed0', 'summary.json')))

  @pytest.mark.slow
  def test_whole_digits_suite_smoke(self):
    _, docs, text = self._run(list(reproduce.VARIANTS), (0,), reskd=True)
    for label in reproduce.VARIANTS:
      self.assertIn(f'| {label} | ', text)
    self.assertIn('ResKD (our reading)', text)
    self.assertTrue(os.path.exists(os.path.join(docs, 'digits_reskd.png')))


if __name__ == '__main__':
  absltest.main()
