"""The command line of experiments.main: one-line errors, paired durations, --print_config."""

import glob
import os
import signal
import stat
import subprocess
import sys
import time

from absl.testing import absltest, parameterized

from experiments import cli
import workers

DIGITS = 'experiments/configs/digits.py'  # GKT
FMNIST_SMOKE = 'experiments/configs/fashion_mnist.py:method=baseline,smoke'
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(workers.REPO, 'experiments', 'configs',
                                                        '*.py'))
                      if os.path.basename(p) not in ('__init__.py', 'common.py'))


def _main(*args, module='experiments.main'):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=workers.REPO,
                        env=workers.device_env(1), capture_output=True, text=True,
                        timeout=workers.TIMEOUT)


class OneLineErrorTest(parameterized.TestCase):

  def assert_one_line(self, result, *fragments):
    self.assertEqual(result.returncode, 2, result.stderr[-3000:])
    lines = result.stderr.splitlines()
    self.assertLen(lines, 1, result.stderr[-3000:])
    self.assertStartsWith(lines[0], 'error: ')
    for fragment in fragments:
      self.assertIn(fragment, lines[0])

  @parameterized.named_parameters(
      ('typo_in_section', ['--config', DIGITS, '--config.methd.loops=2'],
       ["--config.methd.loops=2", "no field 'methd'", "did you mean 'method'", 'model, optim']),
      ('field_in_another_section', ['--config', DIGITS, '--config.arch=resnet32'],
       ["--config.arch=resnet32", "no field 'arch'", 'did you mean config.model.arch']),
      ('field_of_a_number', ['--config', DIGITS, '--config.seed.x=1'],
       ['--config.seed.x=1', 'config.seed is a int']),
      ('missing_config_file', ['--config', 'experiments/configs/gkt/digits.py'],
       ['--config=experiments/configs/gkt/digits.py: no such file',
        'config files: experiments/configs/{cifar,digits,fashion_mnist,imagenet,reskd_chain}.py',
        'method=NAME']),
      ('bad_config_argument', ['--config', f'{DIGITS}:smok'],
       [f'--config={DIGITS}:smok',
        "unknown key 'smok'; allowed: ['arch', 'drop_path', 'method', 'pruned_depth', "
        "'smoke', 'stpp']"]),
      ('value_of_the_wrong_type', ['--config', DIGITS, '--config.total_steps=abc'],
       ['--config.total_steps=abc', "invalid literal for int()"]),
      ('unknown_flag', ['--config', DIGITS, '--bogus'], ["'bogus'", '--helpfull']),
      ('no_config', [], ['--config is required', 'experiments/configs/{cifar,digits,']),
      ('extra_argument', ['--config', DIGITS, 'extra'], ["['extra']"]),
      ('bad_config_value', ['--config', f'{DIGITS}:smoke', '--config.model.arch=resnet33'],
       ["config.model.arch='resnet33'", "allowed: ('resnet8'"]),
      ('chain_config_in_main', ['--config', 'experiments/configs/reskd_chain.py:dataset=digits'],
       ['not a run config', 'experiments.reskd_pipeline']),
  )
  def test_bad_command_line(self, args, fragments):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assert_one_line(_main('--workdir', workdir, *args), *fragments)
    self.assertFalse(os.path.exists(workdir))  # a rejected run leaves nothing behind

  @parameterized.named_parameters(
      ('run_config', ['--config', DIGITS], ['not a ResKD chain config', 'experiments.main']),
      ('no_res_students', ['--config',
                           'experiments/configs/reskd_chain.py:dataset=digits,smoke',
                           '--config.num_res_students=0'],
       ['config.num_res_students=0: must be an integer >= 1']))
  def test_bad_chain_command_line(self, args, fragments):
    workdir = os.path.join(self.create_tempdir().full_path, 'chain')
    self.assert_one_line(_main('--workdir', workdir, *args, module='experiments.reskd_pipeline'),
                         *fragments)

  def test_workdir_that_is_a_file(self):
    path = self.create_tempfile().full_path
    self.assert_one_line(_main('--workdir', path, '--config', f'{DIGITS}:smoke'),
                         f'--workdir={path}: is a file')

  def test_workdir_that_cannot_be_written(self):
    if os.geteuid() == 0:  # root writes through file modes: a path no one can create
      workdir = '/proc/gkt_jax_test_workdir'
    else:
      parent = self.create_tempdir().full_path
      os.chmod(parent, stat.S_IRUSR | stat.S_IXUSR)
      self.addCleanup(os.chmod, parent, stat.S_IRWXU)
      workdir = os.path.join(parent, 'run')
    self.assert_one_line(_main('--workdir', workdir, '--config', f'{DIGITS}:smoke'),
                         f'--workdir={workdir}: cannot write there')

  @parameterized.named_parameters(('truncated', 0.5), ('garbage', None))
  def test_corrupt_idx_file(self, keep):
    data_dir = self.create_tempdir().full_path
    names = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
             't10k-labels-idx1-ubyte')
    for name in names:  # small valid IDX files: 4 images of 2x2, 4 labels
      is_images = 'images' in name
      header = bytes([0, 0, 8, 3 if is_images else 1]) + (
          b''.join(n.to_bytes(4, 'big') for n in ((4, 2, 2) if is_images else (4,))))
      with open(os.path.join(data_dir, name), 'wb') as f:
        f.write(header + bytes(16 if is_images else 4))
    bad = os.path.join(data_dir, 'train-images-idx3-ubyte')
    with open(bad, 'rb') as f:
      content = f.read()
    with open(bad, 'wb') as f:
      f.write(content[:int(len(content) * keep)] if keep else b'\x01\x02garbage')
    result = _main('--workdir', os.path.join(self.create_tempdir().full_path, 'run'),
                   '--config', FMNIST_SMOKE, f'--config.data.dir={data_dir}')
    self.assert_one_line(result, bad, 'truncated' if keep else 'bad IDX magic number')


class SignalTest(absltest.TestCase):

  def test_ctrl_c_saves_says_how_to_resume_and_exits_130(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'experiments.main', '--workdir', workdir, '--config',
         f'{DIGITS}:smoke', '--config.total_steps=5000', '--config.log_every_steps=1',
         '--config.eval_every_steps=5000', '--config.plots=False'],
        cwd=workers.REPO, env=workers.device_env(1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.monotonic() + workers.TIMEOUT
    while not (os.path.exists(metrics) and os.path.getsize(metrics)):
      self.assertIsNone(proc.poll(), 'the run ended before its first log step')
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=workers.TIMEOUT)
    self.assertEqual(proc.returncode, 130, stderr[-3000:])
    self.assertNotIn('Traceback', stderr)
    self.assertRegex(stdout, r'SIGINT: saved a checkpoint at step \d+ in .*; run the same '
                     r'command again to resume')


class DurationOverrideTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (os.path.relpath(p, os.path.join(workers.REPO, 'experiments', 'configs')), p)
      for p in CONFIG_FILES)
  def test_total_steps_on_the_command_line_works_on_every_config_file(self, path):
    from gkt_jax.train import validate  # pylint: disable=g-import-not-at-top
    config = cli.load_config_file(path)
    sections = ['']  # run configs; a ResKD chain config holds one run config per stage
    if 'method' not in config:
      sections = [k for k in config if hasattr(config[k], 'keys') and 'method' in config[k]]
    for section in sections:
      name = f'{section}.total_steps' if section else 'total_steps'
      run = config[section] if section else config
      run.total_steps = 30
      cli.resolve_duration_pairs(config, {name: 30})
      self.assertIsNone(run.total_epochs, name)
      validate.validate_config(run, num_devices=1)

  def test_epochs_replace_steps_and_both_are_an_error(self):
    result = _main('--config', f'{DIGITS}:smoke', '--config.total_epochs=2',
                   '--config.eval_every_epochs=1', '--print_config')
    self.assertEqual(result.returncode, 0, result.stderr)
    for line in ('total_epochs: 2.0', 'total_steps: null', 'eval_every_epochs: 1.0',
                 'eval_every_steps: null', 'log_every_steps: 2'):
      self.assertIn(f'\n{line}\n', result.stdout)
    both = _main('--workdir', self.create_tempdir().full_path, '--config', f'{DIGITS}:smoke',
                 '--config.total_epochs=2', '--config.total_steps=3')
    self.assertEqual(both.returncode, 2)
    self.assertIn('set only one of total_steps and total_epochs', both.stderr)
    self.assertIn('on the command line give one of them', both.stderr)


class PrintConfigTest(absltest.TestCase):

  def test_prints_every_field_with_overrides_and_runs_nothing(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = _main('--config', DIGITS, '--config.method.loops=2', '--print_config',
                   '--workdir', workdir)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('\n  loops: 2\n', result.stdout)
    for field in ('bn_stats: full_network', 'arch: resnet20', 'total_epochs: 30.0', 'seed: 0',
                  'eval_every_steps: null'):
      self.assertIn(field, result.stdout)
    self.assertFalse(os.path.exists(workdir))

  def test_chain_config(self):
    result = _main('--config', 'experiments/configs/reskd_chain.py:dataset=digits',
                   '--config.res_student.total_steps=5', '--print_config',
                   module='experiments.reskd_pipeline')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('res_student:\n', result.stdout)
    self.assertIn('  total_steps: 5\n', result.stdout)


if __name__ == '__main__':
  absltest.main()
