"""A finished run evaluated again with evaluators its config did not name
(gkt_jax/train/reevaluate.py, experiments/evaluate_run.py, reproduce's added_evals)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl import app
from absl.testing import absltest

from experiments import cli, reproduce
from experiments.configs import common
from gkt_jax.train import reevaluate, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNED = {'pruned_depth': dict(common.PRUNED_DEPTH_EVAL)}
RECAL = 64  # training images for a BatchNorm recalibration


def _train(workdir: str, *, pruned: bool = False, recalibrate: int = 0) -> dict:
  config = common.get_config('sandwich', 'digits', 'smoke')
  config.verbose, config.plots = False, False
  if pruned:
    config.evals.pruned_depth = dict(common.PRUNED_DEPTH_EVAL)
  if recalibrate:
    config.method.bn_recalibration_images = recalibrate
  return train_and_evaluate(config, workdir)


class ReevaluateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # A directory of this process's own: xdist workers may each set the class up at once.
    cls.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.plain = os.path.join(cls.root, 'reevaluate_plain')
    cls.named = os.path.join(cls.root, 'reevaluate_named')
    cls.recalibrated = os.path.join(cls.root, 'reevaluate_recalibrated')
    cls.plain_summary = _train(cls.plain)
    cls.named_summary = _train(cls.named, pruned=True)
    cls.recalibrated_summary = _train(cls.recalibrated, pruned=True, recalibrate=RECAL)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)  # three trained runs per test process
    super().tearDownClass()

  def _copy(self) -> str:
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(self.plain, workdir)
    return workdir

  def test_an_added_evaluator_reports_what_the_run_would_have(self):
    workdir = self._copy()
    self.assertNotIn('pruned_acc/period2', self.plain_summary)
    added = reevaluate.evaluate_run(workdir, PRUNED)
    # The same training with the evaluator in its config (evaluators do not change training).
    self.assertEqual(self.named_summary['full_accuracy'], self.plain_summary['full_accuracy'])
    self.assertEqual(added, {'pruned_acc/period2': self.named_summary['pruned_acc/period2'],
                             'pruned_kept/period2': self.named_summary['pruned_kept/period2']})
    self.assertEqual(reevaluate.added_results(workdir), added)
    self.assertEqual(reevaluate.added_evals(workdir), json.loads(json.dumps(PRUNED)))
    with open(os.path.join(workdir, reevaluate.ADDED_EVALS_FILE)) as f:
      self.assertEqual(json.load(f)['step'], self.plain_summary['steps'])
    # A second evaluator is merged with the first.
    reevaluate.evaluate_run(workdir, {'more': {'type': 'pruned_depth', 'periods': (3,)}})
    self.assertEqual(set(reevaluate.added_results(workdir)),
                     {'pruned_acc/period2', 'pruned_kept/period2', 'pruned_acc/period3',
                      'pruned_kept/period3'})
    self.assertEqual(set(reevaluate.added_evals(workdir)), {'pruned_depth', 'more'})

  def test_recalibrated_statistics_give_what_a_recalibrating_run_reports(self):
    workdir = self._copy()
    added = reevaluate.evaluate_run(workdir, PRUNED, bn_recalibration_images=RECAL)
    # The same training with the method's recalibration (it serves evaluation only).
    theirs = self.recalibrated_summary
    for key in ('full_accuracy', 'train_accuracy', 'pruned_acc/period2'):
      self.assertEqual(added[f'bn_recal{RECAL}/{key}'], theirs[key], key)
    # After 4 steps the running statistics are far from the data's: recalibration shows.
    self.assertNotEqual(added[f'bn_recal{RECAL}/full_accuracy'],
                        self.plain_summary['full_accuracy'])
    self.assertEqual(set(reevaluate.added_evals(workdir)),
                     {f'bn_recal{RECAL}/full', f'bn_recal{RECAL}/pruned_depth'})
    # Without evaluators: the deployed network's and the training images' accuracy alone.
    other = reevaluate.evaluate_run(workdir, {}, bn_recalibration_images=32)
    self.assertEqual(set(other), {'bn_recal32/full_accuracy', 'bn_recal32/train_accuracy'})
    self.assertIn(f'bn_recal{RECAL}/pruned_acc/period2', reevaluate.added_results(workdir))
    for bad in (0, -1, 2.5, True):
      with self.assertRaisesRegex(ValueError, f'bn_recalibration_images={bad!r}: must be an '
                                  'integer >= 1'):
        reevaluate.evaluate_run(workdir, {}, bn_recalibration_images=bad)

  def test_results_of_another_step_are_not_the_runs(self):
    workdir = self._copy()
    reevaluate.evaluate_run(workdir, PRUNED)
    summary = dict(self.plain_summary, steps=self.plain_summary['steps'] + 1)
    self.assertEqual(reevaluate.added_results(workdir, summary), {})

  def test_a_network_that_is_not_the_summarys_writes_nothing(self):
    workdir = self._copy()
    path = os.path.join(workdir, 'summary.json')
    with open(path, 'w') as f:
      json.dump(dict(self.plain_summary, full_accuracy=0.5), f)
    with self.assertRaisesRegex(ValueError, r'full_accuracy=.*, its summary 0\.5'):
      reevaluate.evaluate_run(workdir, PRUNED)
    with open(path, 'w') as f:
      json.dump(dict(self.plain_summary, steps=self.plain_summary['steps'] + 5), f)
    with self.assertRaisesRegex(ValueError, 'newest checkpoint is step 4, but the run finished '
                                'at step 9'):
      reevaluate.evaluate_run(workdir, PRUNED)
    self.assertFalse(os.path.exists(os.path.join(workdir, reevaluate.ADDED_EVALS_FILE)))

  def test_bad_requests(self):
    workdir = self._copy()
    with self.assertRaisesRegex(ValueError, 'evals is empty'):
      reevaluate.evaluate_run(workdir, {})
    with self.assertRaisesRegex(ValueError, r"evals\.x\.type='nope'"):
      reevaluate.evaluate_run(workdir, {'x': {'type': 'nope'}})
    with self.assertRaisesRegex(FileNotFoundError, 'must be a finished training run'):
      reevaluate.evaluate_run(self.create_tempdir().full_path, PRUNED)
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    with self.assertRaisesRegex(FileNotFoundError, 'holds no checkpoint'):
      reevaluate.evaluate_run(workdir, PRUNED)

  def test_a_failed_setup_leaves_no_scratch_directory(self):
    scratch_parent = self.create_tempdir().full_path
    with mock.patch.object(tempfile, 'tempdir', scratch_parent), \
         mock.patch.object(reevaluate.run_setup, 'setup_run', side_effect=RuntimeError('x')):
      with self.assertRaisesRegex(RuntimeError, 'x'):
        reevaluate.final_evaluator(self.plain)
    self.assertEqual(os.listdir(scratch_parent), [])

  def test_command_line_requests(self):
    self.assertEqual(cli.requested_evals(['pruned_depth'], None),
                     {'pruned_depth': {'type': 'pruned_depth'}})
    self.assertEqual(cli.requested_evals(None, '{"p": {"type": "pruned_depth"}}'),
                     {'p': {'type': 'pruned_depth'}})
    for names, text, message in (
        (None, None, 'exactly one of'), (['pruned_depth'], '{}', 'exactly one of'),
        (['prune'], None, "'prune' is not one of"), (None, '[1]', 'non-empty JSON object'),
        (None, '{', 'is not JSON')):
      with self.assertRaisesRegex(app.UsageError, message):
        cli.requested_evals(names, text)

  def test_command_line(self):
    workdir = self._copy()
    ok = subprocess.run([sys.executable, '-m', 'experiments.evaluate_run', '--workdir', workdir,
                         '--evals', 'pruned_depth'], capture_output=True, text=True, cwd=ROOT)
    self.assertEqual(ok.returncode, 0, ok.stderr)
    self.assertEqual(json.loads(ok.stdout.strip().splitlines()[-1]),
                     reevaluate.added_results(workdir))
    bad = subprocess.run([sys.executable, '-m', 'experiments.evaluate_run', '--workdir',
                          self.create_tempdir().full_path, '--evals', 'pruned_depth'],
                         capture_output=True, text=True, cwd=ROOT)
    self.assertEqual(bad.returncode, 2)
    self.assertRegex(bad.stderr.strip(), r'^error: .*summary\.json not found: --workdir must '
                     'be a finished training run$')

  def test_a_suite_adds_its_evaluators_to_finished_cells(self):
    root = self.create_tempdir().full_path
    reproduce.run_suite('digits', root, (0,), ['baseline', 'layerdrop'], total_steps=2,
                        reskd=False)
    suite = dict(reproduce.SUITES['digits'], added_evals=PRUNED)
    baseline = os.path.join(root, 'digits', 'baseline', 'seed0')
    layerdrop = os.path.join(root, 'digits', 'layerdrop', 'seed0')
    # LayerDrop's own config runs the evaluator: nothing to add there.
    self.assertEqual(reproduce.missing_evals(suite, layerdrop), {})
    self.assertEqual(reproduce.missing_evals(suite, baseline), PRUNED)
    reproduce.add_evals(suite, baseline)
    self.assertEqual(reproduce.missing_evals(suite, baseline), {})
    docs = os.path.join(root, 'docs')
    text = reproduce.report('digits', root, docs, (0,), ['baseline', 'layerdrop'])
    self.assertIn('| every other block pruned |', text)
    self.assertRegex(text, r'Code: 0\.1\.0\S*\. Accuracy')
    with open(os.path.join(docs, 'digits.json')) as f:
      stats = json.load(f)
    self.assertEqual(stats['baseline']['pruned'],
                     [reevaluate.added_results(baseline)['pruned_acc/period2']])
    with open(os.path.join(layerdrop, 'summary.json')) as f:
      self.assertEqual(stats['layerdrop']['pruned'], [json.load(f)['pruned_acc/period2']])
    # A cell without checkpoints (a fresh clone's) is named and left.
    cell = os.path.join(root, 'digits', 'baseline', 'seed0')
    os.remove(os.path.join(cell, reevaluate.ADDED_EVALS_FILE))
    shutil.rmtree(os.path.join(cell, 'checkpoints'))
    reproduce.add_evals(suite, cell)
    self.assertEqual(reproduce.missing_evals(suite, cell), PRUNED)


if __name__ == '__main__':
  absltest.main()
