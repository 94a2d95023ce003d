"""The results pipeline (experiments/reproduce.py) on digits: runs, resumes, reports."""

import json
import os

from absl import flags
from absl.testing import absltest, flagsaver
import pytest

from experiments import reproduce
from experiments.configs import common
from gkt_jax import evaluate, models


class ReproduceTest(absltest.TestCase):

  def test_bn_ablation_compares_the_seeds_both_settings_finished(self):
    def row(seeds, full, level3):
      return {'seeds': seeds, 'full_accuracy': full, 'levels': {3: level3}}

    stats = {'gkt': row([0, 1, 2], [0.80, 0.90, 0.70], [0.5, 0.6, 0.4]),
             'gkt_every_pass': row([1, 2], [0.85, 0.60], [0.3, 0.2]),
             'stimulative': row([0], [0.8], [0.5])}
    lines = reproduce.bn_ablation_lines(stats)
    rows = [l for l in lines if l.startswith('| gkt')]
    self.assertLen(rows, 1)
    cells = [c.strip() for c in rows[0].strip('|').split('|')]
    # seed 0 of gkt (0.80) is left out: means over seeds 1 and 2 only.
    self.assertEqual(cells[0], 'gkt')
    self.assertTrue(cells[1].startswith('0.8000 +-'), cells)  # (0.90 + 0.70) / 2
    self.assertTrue(cells[2].startswith('0.7250 +-'), cells)
    self.assertTrue(cells[3].startswith('-0.0750 +-'), cells)  # (-0.05 - 0.10) / 2
    self.assertTrue(cells[4].startswith('0.5000 +-'), cells)
    self.assertEqual(cells[6], '1, 2')
    self.assertEqual(reproduce.bn_ablation_lines({'gkt': stats['gkt']}), [])

  def test_claims_are_judged_on_the_seeds_both_variants_finished(self):
    def row(seeds, full):
      return {'seeds': seeds, 'full_accuracy': full, 'levels': {3: []}}

    stats = {'baseline': row([0, 1, 2], [0.80, 0.90, 0.70]),
             'gkt': row([0, 1, 2], [0.81, 0.91, 0.69]),      # +, +, -: not resolved
             'stimulative': row([1, 2], [0.80, 0.60]),        # below gkt on 1 and 2
             'ekd_fws': row([0, 1], [0.85, 0.95]),            # above baseline on both
             'stochastic_depth': row([2], [0.5])}
    verdicts = {}
    for line in reproduce.claims_lines(stats):
      if ' > ' in line:
        cells = [c.strip() for c in line.strip('|').split('|')]
        verdicts[cells[0]] = (cells[2], cells[3])
    self.assertEqual(verdicts['gkt > baseline'], ('+0.0100, +0.0100, -0.0100',
                                                  'not resolved by the seed spread'))
    self.assertEqual(verdicts['gkt > stimulative'][1], 'holds')
    self.assertEqual(verdicts['stimulative > baseline'][1], 'reversed')
    self.assertEqual(verdicts['ekd_fws > baseline'], ('+0.0500, +0.0500', 'holds'))
    self.assertEqual(verdicts['stochastic_depth > baseline'][1], 'one seed: not judged')
    self.assertEqual(verdicts['stimulative > stochastic_depth'][1], 'one seed: not judged')
    self.assertEqual(reproduce.claims_lines({'gkt': stats['gkt']}), [])

  def test_report_command_names_the_flags_that_change_the_numbers(self):
    self.assertEqual(reproduce.suite_command('fmnist'),
                     'python -m experiments.reproduce --suite fmnist')
    with flagsaver.flagsaver():
      flags.FLAGS(['reproduce', '--suite=digits', '--total_steps=2', '--seeds=0,1',
                   '--root=/tmp/r', '--noreport'])
      self.assertEqual(reproduce.suite_command('digits'),
                       'python -m experiments.reproduce --suite digits --total_steps=2 '
                       '--seeds=0,1 --root=/tmp/r')

  def _run(self, labels, seeds, reskd=False):
    root = self.create_tempdir().full_path
    docs = os.path.join(root, 'docs')
    reproduce.run_suite('digits', root, seeds, labels, total_steps=2, reskd=reskd)
    return root, docs, reproduce.report('digits', root, docs, seeds, labels)

  def test_a_cell_is_current_while_its_method_settings_are(self):
    current = reproduce.run_config(reproduce.SUITES['fmnist'], 'gkt', 0).method.to_dict()
    # A cell run before bn_recalibration_images was written into every config: same run.
    older = {k: v for k, v in current.items() if k != 'bn_recalibration_images'}
    self.assertTrue(reproduce._same_method(older, current))
    self.assertTrue(reproduce._same_method(dict(current, levels=3), current))
    self.assertFalse(reproduce._same_method(dict(current, levels=4), current))
    self.assertFalse(reproduce._same_method(dict(older, bn_recalibration_images=500), current))
    self.assertFalse(reproduce._same_method(dict(current, retired_field=1), current))
    self.assertFalse(reproduce._same_method(dict(current, name='stimulative'), current))
    self.assertFalse(reproduce._same_method(None, current))

  def test_regime_lines(self):
    baseline = {'train_accuracy': [0.999, 0.99], 'gap': [0.12, 0.11], 'train_seeds': [0, 2]}
    self.assertEqual(reproduce.regime_lines(baseline), [
        '', 'Regime of the plain network (baseline train accuracy / gap): seed 0: 0.9990 / '
        '+0.1200; seed 2: 0.9900 / +0.1100. Train accuracy >= 0.995 and gap >= 0.04 (the '
        'papers\' regime) on 1 of 2 seeds.'])
    self.assertEqual(reproduce.regime_lines({'train_accuracy': [], 'gap': []}), [])
    self.assertEqual(reproduce.regime_lines(None), [])

  def test_a_suite_adds_the_pruned_depth_evaluator_on_request(self):
    suite = reproduce.SUITES['digits']
    self.assertNotIn('pruned_depth', reproduce.run_config(suite, 'gkt', 0).evals)
    config = reproduce.run_config(dict(suite, pruned_depth=True), 'sandwich', 0)
    self.assertEqual(config.evals.pruned_depth.to_dict(), common.PRUNED_DEPTH_EVAL)

  def test_scarce_suites_train_on_the_same_subset(self):
    configs = [reproduce.run_config(reproduce.SUITES[name], cell, seed)
               for name in ('fmnist_scarce', 'fmnist_scarce_r56')
               for cell in reproduce.suite_cells(reproduce.SUITES[name]) for seed in (0, 2)]
    self.assertEqual({c.data.options.train_examples_per_class for c in configs},
                     {reproduce.SCARCE_DATA['train_examples_per_class']})
    self.assertEqual({c.model.arch for c in configs}, {'resnet20', 'resnet56'})
    self.assertEqual({c.total_epochs for c in configs}, {reproduce.SCARCE_EPOCHS})
    self.assertEqual(reproduce.same_data_suites('fmnist_scarce'),
                     ['fmnist_scarce', 'fmnist_scarce_r56'])
    self.assertEqual(reproduce.same_data_suites('fmnist'), ['fmnist_long', 'fmnist'])
    self.assertEqual(reproduce.compute_plot_name(['fmnist_scarce', 'fmnist_scarce_r56']),
                     'fmnist_scarce_compute.png')
    self.assertEqual(reproduce.compute_plot_name(['fmnist_long', 'fmnist']),
                     'fashion_mnist_compute.png')
    scarce = reproduce.SUITES['fmnist_scarce']
    self.assertEqual(reproduce.cell_seeds(scarce, 'gkt'), (0, 1, 2))
    self.assertEqual(reproduce.cell_seeds(scarce, 'gkt_geometric'), (0,))
    self.assertEqual(reproduce.suite_network(reproduce.SUITES['fmnist_scarce_r56']),
                     'ResNet-56 x0.5')

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
    # The regime, per method: training accuracy and train minus test of every seed.
    self.assertIn('| train accuracy | gap (train - test) |', text)
    self.assertIn('Regime of the plain network (baseline train accuracy / gap): seed 0: ', text)
    for s in (0, 1):
      with open(os.path.join(root, 'digits', 'ekd_fws', f'seed{s}', 'summary.json')) as f:
        ekd = json.load(f)
      self.assertAlmostEqual(stats['ekd_fws']['gap'][s],
                             ekd['train_accuracy'] - ekd['full_accuracy'])
    # Same data order across methods: the seed alone fixes the batches.
    cfgs = [reproduce.run_config(reproduce.SUITES['digits'], l, 1) for l in reproduce.VARIANTS]
    self.assertLen({(c.seed, c.data.batch_size, c.total_epochs, c.optim.to_json())
                    for c in cfgs}, 1)
    # A finished suite is not trained again.
    before = os.path.getmtime(os.path.join(root, 'digits', 'baseline', 'seed0', 'summary.json'))
    reproduce.run_suite('digits', root, (0,), ['baseline'], total_steps=2, reskd=False)
    self.assertEqual(before, os.path.getmtime(
        os.path.join(root, 'digits', 'baseline', 'seed0', 'summary.json')))
    # A cell trained with another config is left out of the report, and named.
    self.assertEqual(reproduce.stale_lines('digits', root, (0, 1), ['baseline', 'ekd_fws']), [])
    # A cell trained before a data option existed counts as the config that leaves it unset;
    # one trained on another subset does not.
    path = os.path.join(root, 'digits', 'baseline', 'seed1', 'config.json')
    with open(path) as f:
      stored = json.load(f)
    self.assertEqual(stored['data']['options'], {'train_examples_per_class': None})
    del stored['data']['options']
    with open(path, 'w') as f:
      json.dump(stored, f)
    self.assertEqual(reproduce.stale_lines('digits', root, (0, 1), ['baseline']), [])
    stored['data']['options'] = {'train_examples_per_class': 50}
    with open(path, 'w') as f:
      json.dump(stored, f)
    self.assertEqual(reproduce.stale_lines('digits', root, (0, 1), ['baseline'])[1:],
                     ['Not counted (trained with a config the suite no longer runs; the same '
                      'command retrains them): baseline seed 1.'])
    stored['data']['options'] = {'train_examples_per_class': None}
    with open(path, 'w') as f:
      json.dump(stored, f)
    path = os.path.join(root, 'digits', 'ekd_fws', 'seed1', 'config.json')
    with open(path) as f:
      stored = json.load(f)
    stored['optim']['weight_decay'] = 0.123
    with open(path, 'w') as f:
      json.dump(stored, f)
    self.assertEqual(reproduce.stale_lines('digits', root, (0, 1), ['baseline', 'ekd_fws'])[1:],
                     ['Not counted (trained with a config the suite no longer runs; the same '
                      'command retrains them): ekd_fws seed 1.'])

  @pytest.mark.slow
  def test_whole_digits_suite_smoke(self):
    _, docs, text = self._run(list(reproduce.VARIANTS), (0,), reskd=True)
    for label in reproduce.VARIANTS:
      self.assertIn(f'| {label} | ', text)
    self.assertIn('ResKD (our reading)', text)
    self.assertTrue(os.path.exists(os.path.join(docs, 'digits_reskd.png')))


if __name__ == '__main__':
  absltest.main()
