"""Checkpoints: exact resume after SIGTERM/SIGINT, signal latency, corrupted checkpoints,
config checks, NaN stops."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import jax
import numpy as np

from gkt_jax.train import checkpoint, preemption, train_and_evaluate, trainer
import workers

STEPS = 16
# Smaller nets than the smoke config's ResNet-20, which compile in about half its time: GKT
# needs droppable blocks (ResNet-14 has 3), the baseline runs need none (ResNet-8).
GKT_ARCH, BASELINE_ARCH = 'resnet14', 'resnet8'


def _smoke(method='gkt', **fields):
  return workers.smoke_config(method, fields)


def _main_command(workdir: str, method: str, arch: str, *fields: str) -> list[str]:
  """experiments.main on the method's digits smoke config, without plots, with `arch` and
  `fields` ('dotted.name=value') set."""
  return [sys.executable, '-m', 'experiments.main', '--workdir', workdir, '--config',
          f'experiments/configs/digits.py:method={method},smoke', f'--config.model.arch={arch}',
          '--config.plots=False', *(f'--config.{f}' for f in fields)]


class ResumeTest(absltest.TestCase):

  def test_interrupted_runs_resume_to_the_uninterrupted_result_bitwise(self):
    tmp = self.create_tempdir().full_path
    # Checkpoints every 4 steps (and at the end): not part of the arithmetic.
    overrides = {'method': 'gkt', 'model.arch': GKT_ARCH, 'total_steps': STEPS,
                 'log_every_steps': 1, 'eval_every_steps': STEPS, 'ckpt_every_steps': 4}
    reference = workers.run(os.path.join(tmp, 'ref.npz'), os.path.join(tmp, 'ref'), overrides)

    with self.subTest('SIGTERM, then Ctrl-C (SIGINT): each saves at the next step; resume'):
      workdir = os.path.join(tmp, 'term')
      # SIGTERM arrives while step 5 is logged; the handler's flag is read after step 6.
      first = workers.run(os.path.join(tmp, 'first.npz'), workdir,
                          dict(overrides, signal_at_step=[5, 'SIGTERM']))
      self.assertTrue(first['__preempted__'])
      self.assertEqual(int(first['__step__']), 6)
      self.assertEqual(checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                               read_only=True).latest_step(), 6)
      second = workers.run(os.path.join(tmp, 'second.npz'), workdir,
                           dict(overrides, signal_at_step=[9, 'SIGINT']))
      self.assertTrue(second['__preempted__'])
      self.assertEqual(int(second['__step__']), 10)
      resumed = workers.run(os.path.join(tmp, 'resumed.npz'), workdir, overrides)
      self.assertFalse(resumed['__preempted__'])
      workers.assert_same_arrays(self, reference, resumed)  # bitwise: rtol = atol = 0
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        steps = [json.loads(line)['step'] for line in f if '"loss"' in line]
      self.assertEqual(steps, list(range(1, STEPS + 1)))  # no step logged twice or lost
      with open(os.path.join(workdir, 'summary.json')) as f:
        summary = json.load(f)
      self.assertEqual(summary['resumed_from_step'], 10)
      self.assertEqual(summary['resumed_from_steps'], [6, 10])

    with self.subTest('SIGKILL: no handler runs; resume from the last periodic checkpoint'):
      workdir = os.path.join(tmp, 'kill')
      workers.run(os.path.join(tmp, 'killed.npz'), workdir,
                  dict(overrides, signal_at_step=[11, 'SIGKILL']), expect_code=-9)
      saved = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                      read_only=True).all_steps()
      self.assertTrue(saved and set(saved) <= {4, 8}, saved)
      resumed = workers.run(os.path.join(tmp, 'resumed2.npz'), workdir, overrides)
      workers.assert_same_arrays(self, reference, resumed)
      with open(os.path.join(workdir, 'summary.json')) as f:
        self.assertEqual(json.load(f)['resumed_from_step'], max(saved))

  def test_signal_is_acted_on_within_a_few_steps_of_the_device(self):
    # The host may dispatch steps ahead of the device; with no log step for 1000 steps, a
    # signal sent when the device finishes step 20 must still stop the run by step 20 + k.
    tmp = self.create_tempdir().full_path
    workdir = os.path.join(tmp, 'run')
    result = workers.run(os.path.join(tmp, 'out.npz'), workdir, {
        'method': 'baseline', 'model.arch': BASELINE_ARCH, 'total_steps': 400,
        'log_every_steps': 1000, 'eval_every_steps': 400, 'ckpt_every_steps': 1000,
        'signal_at_device_step': [20, 'SIGTERM']})
    self.assertTrue(result['__preempted__'])
    step = int(result['__step__'])
    self.assertBetween(step, 20, 20 + trainer.MAX_STEPS_IN_FLIGHT + 2)  # 52 before the bound
    self.assertEqual(checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                             read_only=True).latest_step(), step)

  def test_second_sigint_exits_at_once(self):
    watcher = preemption.PreemptionWatcher()
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      self.assertTrue(watcher.requested(0))
      os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C after SIGTERM: still saves
      self.assertEqual(watcher.signal_name, 'SIGTERM')
      with self.assertRaisesRegex(KeyboardInterrupt, 'second SIGINT'):
        os.kill(os.getpid(), signal.SIGINT)
    finally:
      watcher.restore_handlers()

  def test_final_evaluation_reports_progress_and_ctrl_c_stops_it_at_once(self):
    # A final evaluation of 6,000 subnets over 45 batches: minutes, with progress lines.
    workdir = self.create_tempdir().full_path
    command = _main_command(workdir, 'gkt', GKT_ARCH, 'total_steps=2',
                            'data.eval_batch_size=8', 'evals.subnet_chains.num_chains=2000')
    proc = subprocess.Popen(command, cwd=workers.REPO, env=workers.device_env(1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      progress = None
      for line in proc.stdout:
        if line.startswith('final evaluation'):
          progress = line
          if 'batches' in line:
            break
      self.assertIsNotNone(progress, 'the run ended without a final evaluation line')
      self.assertRegex(progress, r'^final evaluation 4/4 \(subnet_chains\): \d+/45 batches '
                       r'\(\d+%\), elapsed \dm\d\ds ETA \d+m\d\ds$')
      signalled = time.perf_counter()
      proc.send_signal(signal.SIGINT)
      _, stderr = proc.communicate(timeout=workers.TIMEOUT)
      # Without the interruptible wait and os._exit: the rest of the evaluation (minutes).
      self.assertLess(time.perf_counter() - signalled, 20, stderr[-3000:])
      self.assertEqual(proc.returncode, 128 + signal.SIGINT, stderr[-3000:])
      self.assertIn('stopped at once by Ctrl-C', stderr)
      self.assertFalse(os.path.exists(os.path.join(workdir, 'summary.json')))
    finally:
      proc.kill()
      proc.communicate()

  def _one_stderr_line(self, command, env, returncode: int) -> str:
    """Runs `command`; checks its exit status and that stderr is one line, which it returns."""
    result = subprocess.run(command, cwd=workers.REPO, env=env, capture_output=True, text=True,
                            timeout=workers.TIMEOUT)
    self.assertEqual(result.returncode, returncode, result.stderr[-3000:])
    lines = result.stderr.splitlines()
    self.assertLen(lines, 1, '\n'.join(lines[:20]))
    return lines[0]

  def test_corrupted_latest_checkpoint_falls_back_in_one_line(self):
    workdir = self.create_tempdir().full_path
    command = _main_command(workdir, 'baseline', BASELINE_ARCH, 'evals.full.type=full',
                            'eval_every_steps=2', 'ckpt_every_steps=2')
    env = workers.device_env(1)
    subprocess.run(command + ['--config.total_steps=4'], cwd=workers.REPO, env=env,
                   check=True, capture_output=True, timeout=workers.TIMEOUT)
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    self.assertEqual(checkpoint.Checkpointer(ckpt_dir, read_only=True).all_steps(), [2, 4])
    chunks = glob.glob(os.path.join(ckpt_dir, '4', 'state', '**', 'd', '*'), recursive=True)
    self.assertTrue(chunks)
    for path in chunks:  # truncate every data file of step 4
      with open(path, 'rb') as f:
        data = f.read()
      with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    # Orbax's failed read used to add one traceback per array (6,600 lines for a ResNet-50).
    line = self._one_stderr_line(command + ['--config.total_steps=6'], env, returncode=0)
    # (The cause's wording is TensorStore's: DescribeTest checks how it is shortened.)
    self.assertRegex(line, r'checkpoint step 4 in .* unreadable \(step 4: ValueError: '
                     r'OUT_OF_RANGE: [^<]*\); set aside as corrupt-4; resuming from step 2$')
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual((summary['resumed_from_step'], summary['steps']), (2, 6))
    self.assertEqual(sorted(os.listdir(ckpt_dir)), ['2', '4', '6', 'corrupt-4'])
    # Every checkpoint unreadable: one line, exit status 2, nothing in the workdir changed.
    for step in (2, 4, 6):
      for path in glob.glob(os.path.join(ckpt_dir, str(step), 'state', '**', 'd', '*'),
                            recursive=True):
        with open(path, 'wb') as f:
          f.write(b'')
    before = {name: os.path.getmtime(os.path.join(workdir, name))
              for name in ('config.json', 'summary.json', 'metrics.jsonl')}
    line = self._one_stderr_line(command + ['--config.total_steps=8'], env, returncode=2)
    self.assertRegex(line, rf'^error: no checkpoint in {ckpt_dir} is readable \(steps 6, '
                     r'4, 2; step 6: .*\): move that directory aside and run again to train '
                     r'from scratch, or restore a readable copy of it$')
    self.assertEqual(sorted(os.listdir(ckpt_dir)), ['2', '4', '6', 'corrupt-4'])
    self.assertEqual(before, {name: os.path.getmtime(os.path.join(workdir, name))
                              for name in before})

  def test_resume_with_a_changed_model_is_a_clear_error_and_changes_nothing(self):
    workdir = self.create_tempdir().full_path
    train_and_evaluate(_smoke('baseline', total_steps=2), workdir)
    files = {}
    for name in ('config.json', 'summary.json', 'metrics.jsonl'):
      with open(os.path.join(workdir, name), 'rb') as f:
        files[name] = f.read()
    config = _smoke('baseline', total_steps=4)
    config.model.arch = 'resnet32'
    with self.assertRaisesRegex(checkpoint.ResumeMismatchError,
                                r'config\.model=.*resnet32.*differs from the checkpoint'):
      train_and_evaluate(config, workdir)
    for name, content in files.items():  # export and config.init still read this workdir
      with open(os.path.join(workdir, name), 'rb') as f:
        self.assertEqual(f.read(), content, name)
    # A changed hyperparameter: refused in one line naming it, unless explicitly allowed;
    # an accepted change (and a longer run) is recorded.
    config = _smoke('baseline', total_steps=4)
    config.optim.weight_decay = 1e-4
    config.method.label_smoothing = 0.1
    with self.assertRaises(checkpoint.ResumeMismatchError) as caught:
      train_and_evaluate(config, workdir)
    self.assertEqual(str(caught.exception), (
        f'{workdir}: resuming at step 2 with other values than its checkpoint: '
        'method.label_smoothing (0.0 -> 0.1), optim.weight_decay (0.0005 -> 0.0001); resume '
        'with the saved values, or accept the change with --config.allow_resume_changes='
        "method.label_smoothing,optim.weight_decay (it is recorded in summary.json's "
        'resume_changes)'))
    for name, content in files.items():
      with open(os.path.join(workdir, name), 'rb') as f:
        self.assertEqual(f.read(), content, name)
    config.method.label_smoothing = 0.0
    config.allow_resume_changes = 'optim.weight_decay'
    summary = train_and_evaluate(config, workdir)
    self.assertEqual(summary['resume_changes'], [
        {'step': 2, 'field': 'optim.weight_decay', 'saved': 0.0005, 'now': 0.0001},
        {'step': 2, 'field': 'total_steps', 'saved': 2, 'now': 4}])

  def test_init_loads_weights_only(self):
    source = self.create_tempdir().full_path
    _, trained = train_and_evaluate(_smoke('baseline', total_steps=2), source,
                                    return_state=True)
    config = _smoke('baseline', total_steps=1, init=source)
    config.optim.lr = 0.0  # the step then leaves the loaded params as they are
    config.optim.weight_decay = 0.0
    summary, state = train_and_evaluate(config, self.create_tempdir().full_path,
                                        return_state=True)
    self.assertIsNone(summary['resumed_from_step'])  # a fresh run: step 0, fresh optimizer
    for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(state.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_resume_from_another_workdir(self):
    source = self.create_tempdir().full_path
    train_and_evaluate(_smoke('baseline', total_steps=2), source)
    summary = train_and_evaluate(_smoke('baseline', total_steps=4, resume=source),
                                 self.create_tempdir().full_path)
    self.assertEqual(summary['resumed_from_step'], 2)


class DescribeTest(absltest.TestCase):

  def test_tensorstore_error_is_its_status_and_cause(self):
    spec = '[tensorstore_spec=\'{"context":{"cache_pool":{}},"driver":"zarr"}\']'
    error = ValueError(
        'OUT_OF_RANGE: Error opening "zarr" driver: Error reading "params.conv/.zarray" in OCDBT '
        'database at local file "/c/4/state/": Error reading Byte range [0, 7859) of local file '
        f'"/c/4/state/d/ddab": Requested byte range [0, 7859) is not valid for value of size 0 '
        f'{spec}')
    self.assertEqual(checkpoint._describe(4, error),
                     'step 4: ValueError: OUT_OF_RANGE: Requested byte range [0, 7859) is not '
                     'valid for value of size 0')
    located = ValueError(str(error).replace(
        ' [tensorstore_spec', " [source locations='tensorstore/kvstore/file/file_key_value_store"
        ".cc:123\\ntensorstore/driver/zarr/driver.cc:456'] [tensorstore_spec"))
    self.assertEqual(checkpoint._describe(4, located), checkpoint._describe(4, error))
    missing = ValueError('NOT_FOUND: Error opening "zarr" driver: Error reading Byte range '
                         f'[0, 7859) of local file "/c/4/state/d/ddab" {spec}')
    self.assertEqual(checkpoint._describe(4, missing),
                     'step 4: ValueError: NOT_FOUND: Error reading Byte range [0, 7859) of local '
                     'file "/c/4/state/d/ddab"')

  def test_object_reprs_are_dropped_and_long_messages_cut_at_a_word(self):
    error = TypeError('could not read item: <bound method pybind11_detail_function_record_v1_'
                      'system_libstdcpp_gxx_abi_1xxx.read of <tensorstore.Kv')
    self.assertEqual(checkpoint._describe(2, error), 'step 2: TypeError: could not read item')
    described = checkpoint._describe(2, OSError('word ' * 100 + '\nsecond line'))
    self.assertLessEqual(len(described), 260)
    self.assertTrue(described.endswith('word ...'), described)
    self.assertNotIn('second', described)


class NonFiniteTest(absltest.TestCase):

  def test_nan_stops_the_run_naming_step_and_term_and_saves_nothing_corrupt(self):
    workdir = self.create_tempdir().full_path
    config = _smoke('baseline', total_steps=8, log_every_steps=4, eval_every_steps=8,
                    ckpt_every_steps=1)
    config.optim.lr = 1e30
    with self.assertRaisesRegex(FloatingPointError, r'^step \d+: [\w/]+ = (nan|inf|-inf)'):
      train_and_evaluate(config, workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
    for step in ckpt.all_steps():
      tree = ckpt.restore_raw(step)
      for leaf in jax.tree.leaves((tree['params'], tree['batch_stats'], tree['opt_state'])):
        self.assertTrue(np.all(np.isfinite(leaf)), step)


if __name__ == '__main__':
  absltest.main()
