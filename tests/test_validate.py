"""Config and label validation: every shipped config passes; each bad field gives one line."""

import dataclasses
import importlib
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest, parameterized

from experiments import configs
from experiments.configs import common
from gkt_jax import data as data_lib
from gkt_jax import methods
from gkt_jax.models import ResNet
from gkt_jax.train import optim, validate

_DATASETS = ('digits', 'fashion_mnist')


def _config_modules():
  """Every experiments/configs/<file>.py but the shared pieces, as a module name."""
  root = pathlib.Path(configs.__file__).parent
  return sorted(f'experiments.configs.{p.stem}' for p in root.glob('*.py')
                if p.stem not in ('__init__', 'common'))


def _with(config, path, value):
  """A copy of `config` with the dotted `path` set to `value` (no ConfigDict type check)."""
  tree = config.to_dict()
  *parents, leaf = path.split('.')
  node = tree
  for name in parents:
    node = node[name]
  node[leaf] = value
  return ml_collections.ConfigDict(tree)


class DefaultConfigsTest(parameterized.TestCase):

  @parameterized.product(method=tuple(methods.REGISTRY), dataset=_DATASETS,
                         arg=(None, 'smoke'))
  def test_common_config_passes(self, method, dataset, arg):
    validate.validate_config(common.get_config(method, dataset, arg), num_devices=1)
    validate.validate_config(common.get_config(method, dataset, arg), num_devices=4)

  def test_every_config_file_passes(self):
    modules = _config_modules()
    self.assertGreaterEqual(len(modules), 5)
    for name in modules:
      with self.subTest(name):
        for config in common.run_configs(importlib.import_module(name).get_config()):
          validate.validate_config(config, num_devices=2)

  def test_every_dataset_name_is_accepted(self):
    config = common.get_config('baseline', 'digits')
    for name in data_lib.DATASETS:
      validate.validate_config(_with(config, 'data.name', name))

  def test_every_method_field_is_accepted(self):
    # Fields each method declares it reads, set to valid values, all pass together.
    values = dict(label_smoothing=0.1, bn_recalibration_images=100, final_survival=0.8,
                  rule='uniform', test_scaling=False, temperature=4.0, kl_weight=0.5,
                  subnet_label_weight=0.5, normalize_logits=True, subnet_resize=True,
                  resize_min_scale=0.5, resize_buckets=2, n_sub=3, max_shortening=(2, 3, 1),
                  levels=2, loops=1, sampler='geometric', drop_prob=0.1, gamma=2.0,
                  aggregate='mean', momentum=0.9, kd_weight=2.0, att_weight=0.5,
                  dropout_rate=0.1, detach_teacher=True, attention_eps=0.0, alpha=0.5,
                  residual_target='kd', student_features=True, bn_stats='every_pass',
                  granularity='example', n_random=3, drop_rate=0.3, drop_stage_first=True)
    run = self.create_tempdir()  # a trained run's workdir, as far as validation looks
    run.create_file('config.json', '{}')
    values.update(teacher=run.full_path, student=run.full_path, res_students=(run.full_path,))
    for name, method_cls in methods.REGISTRY.items():
      with self.subTest(name):
        names = method_cls.Settings.names()
        self.assertContainsSubset(names, values)
        config = _with(common.get_config(name, 'digits'), 'method',
                       {'name': name, **{k: values[k] for k in names}})
        validate.validate_config(config)


class MethodSettingsTest(parameterized.TestCase):
  """Each method reads its settings class only: defaults, checks and reads agree."""

  @parameterized.parameters(
      ('baseline', {}), ('stochastic_depth', {}), ('stochastic_depth', {'test_scaling': False}),
      ('stimulative', {'subnet_resize': True}), ('gkt', {'sampler': 'bernoulli'}),
      ('gkt', {'sampler': 'geometric', 'subnet_resize': True}), ('ekd_fws', {}),
      ('stochastic_depth', {'granularity': 'example'}), ('sandwich', {}), ('layerdrop', {}))
  def test_step_runs_on_its_settings(self, name, overrides):
    model = ResNet(stage_sizes=(2, 2), stage_widths=(4, 8), num_classes=3, stem_width=4,
                   shortcut='pad')
    config = dict(common.get_config(name, 'digits').method.to_dict(), **overrides)
    method = methods.get_method(config, model)
    for field, value in overrides.items():
      self.assertEqual(getattr(method.settings, field), value)
    self.assertFalse(hasattr(method, 'config'))  # nothing read around the settings
    images = jnp.zeros((4, 8, 8, 3))
    batch = {'images': images, 'labels': jnp.zeros((4,), jnp.int32)}
    # Shapes only: traces every read of the step and the predictor, compiles nothing.
    variables = jax.eval_shape(lambda: method.model.init(jax.random.key(0), images,
                                                         train=False))
    jax.eval_shape(method.gradients, variables['params'], variables['batch_stats'], batch,
                   jax.random.key(1), method.init_state())
    jax.eval_shape(method.predict, variables, images)
    method.forwards_per_step()

  def test_defaults_pass_their_checks_and_read_back(self):
    for name, method_cls in methods.REGISTRY.items():
      with self.subTest(name):
        for field in dataclasses.fields(method_cls.Settings):
          self.assertTrue(callable(field.metadata.get('check')), field.name)
        config = ml_collections.ConfigDict(method_cls.default_config())
        self.assertEqual(config.name, name)
        self.assertEqual(method_cls.read_settings(config), method_cls.Settings())

  def test_a_bad_value_is_refused_by_the_method_itself(self):
    model = ResNet(stage_sizes=(2, 2), stage_widths=(4, 8), num_classes=3, stem_width=4,
                   shortcut='pad')
    with self.assertRaisesRegex(validate.ConfigError,
                                r'^config\.method\.levels=0: must be an integer >= 1$'):
      methods.get_method({'name': 'gkt', 'levels': 0}, model)
    with self.assertRaisesRegex(validate.ConfigError, r"config\.method\.levles=2: not a field"):
      methods.get_method({'name': 'gkt', 'levles': 2}, model)

  def test_run_fields_are_checked_and_unknown_ones_refused(self):
    config = common.get_config('baseline', 'digits', 'smoke')
    for field, value, message in [
        ('seed', -1, r'^config\.seed=-1: must be an integer >= 0$'),
        ('parallel', 'pjit', r"^config\.parallel='pjit': unknown parallel mode"),
        ('plots', 'yes', r"^config\.plots='yes': must be True or False$"),
        ('max_checkpoints', 0, r'^config\.max_checkpoints=0: must be an integer >= 1$'),
        ('resume', '/nonexistent/run', r'resume=.*must be an existing workdir'),
        ('check_points', True, r"^config\.check_points=True: not a field of a run config; "
         r"accepted: \('allow_resume_changes', 'checkpoints', 'ckpt_every_epochs'")]:
      fields = config.to_dict()
      fields[field] = value
      changed = ml_collections.ConfigDict(fields)
      with self.subTest(field=field), self.assertRaisesRegex(validate.ConfigError, message):
        validate.validate_config(changed, num_devices=1)

  def test_optimizer_fields_are_checked(self):
    for fields, message in [
        ({'lr': -1}, r"^config\.optim\.lr=-1: must be a number >= 0$"),
        ({'optimizer': 'adam'}, r"^config\.optim\.optimizer='adam': unknown optimizer"),
        ({'step_boundaries': (0.5, 2)}, r'step_boundaries=\(0\.5, 2\): must be a sequence of '
         r'fractions'),
        ({'nesterov': 1}, r'nesterov=1: must be True or False'),
        ({'momentun': 0.9}, r"momentun=0\.9: not a field of the optimizer; accepted: "
         r"\('b1', 'b2', 'eps', 'lr', 'momentum'")]:
      with self.subTest(fields=fields), self.assertRaisesRegex(validate.ConfigError, message):
        optim.read(fields)


# (method, dotted field, bad value, expected text after the colon, extra kwargs).
_ERRORS = [
    ('baseline', 'method.name', 'gtk', "unknown method; allowed: ('baseline', 'ekd_fws', 'gkt'",
     {}),
    ('baseline', 'model.arch', 'resnet21', 'unknown architecture; allowed:', {}),
    ('baseline', 'data.name', 'cifar1000', 'unknown dataset; allowed:', {}),
    ('gkt', 'method.sampler', 'uniform',
     "unknown sampler; allowed: ('prefix', 'bernoulli', 'geometric')", {}),
    ('gkt', 'evals.subnet_chains.sampler', 'uniform', 'unknown sampler; allowed:', {}),
    ('gkt', 'evals.depth_curve.type', 'top5', 'unknown evaluator type; allowed:', {}),
    ('gkt', 'method.aggregate', 'max', "unknown aggregate; allowed: ('ema', 'mean')", {}),
    ('stochastic_depth', 'method.rule', 'cosine', 'unknown survival rule; allowed:', {}),
    ('baseline', 'optim.schedule', 'linear',
     "unknown schedule; allowed: ('cosine', 'step', 'constant')", {}),
    ('baseline', 'model.shortcut', 'identity', 'unknown shortcut; allowed:', {}),
    ('baseline', 'model.stem', 'imagenet', 'CIFAR ResNets (resnet20) only have the cifar stem',
     {}),
    # probabilities
    ('gkt', 'method.drop_prob', 1.5, 'must be a probability in [0, 1]', {}),
    ('gkt', 'method.momentum', -0.1, 'must be a probability in [0, 1]', {}),
    ('stochastic_depth', 'method.final_survival', 1.01, 'must be a probability in [0, 1]', {}),
    ('baseline', 'method.label_smoothing', 2.0, 'must be a probability in [0, 1]', {}),
    ('gkt', 'evals.subnet_chains.drop_prob', -0.5, 'must be a probability in [0, 1]', {}),
    ('gkt', 'method.drop_prob', float('nan'), 'must be a probability in [0, 1]', {}),
    ('baseline', 'optim.momentum', 1.0, 'must be a number in [0, 1)', {}),
    # other numbers
    ('gkt', 'method.gamma', 0.0, 'must be a number > 0', {}),
    ('gkt', 'method.temperature', 0.0, 'must be a number > 0', {}),
    ('stimulative', 'method.temperature', -1.0, 'must be a number > 0', {}),
    ('gkt', 'method.kl_weight', -1.0, 'must be a number >= 0', {}),
    ('baseline', 'optim.lr', -0.1, 'must be a number >= 0', {}),
    ('baseline', 'optim.weight_decay', -5e-4, 'must be a number >= 0', {}),
    ('stimulative', 'method.resize_min_scale', 0.0, 'must be a number in (0, 1]', {}),
    ('baseline', 'model.width_multiplier', 0.0, 'must be a number > 0', {}),
    ('baseline', 'optim.step_boundaries', (0.5, 1.5), 'fractions of training in [0, 1]', {}),
    # integers
    ('gkt', 'method.levels', 0, 'must be an integer >= 1', {}),
    ('gkt', 'method.loops', 0, 'must be an integer >= 1', {}),
    ('gkt', 'method.levels', 2.5, 'must be an integer >= 1', {}),
    ('gkt', 'method.loops', True, 'must be an integer >= 1', {}),
    ('stimulative', 'method.n_sub', 0, 'must be an integer >= 1', {}),
    ('gkt', 'evals.subnet_chains.num_chains', 0, 'must be an integer >= 1', {}),
    ('baseline', 'data.batch_size', 0, 'must be an integer >= 1', {}),
    ('baseline', 'data.eval_batch_size', -5, 'must be an integer >= 1', {}),
    ('baseline', 'optim.warmup_steps', -1, 'must be an integer >= 0', {}),
    ('baseline', 'data.options.train_examples_per_class', 0, 'must be an integer >= 1', {}),
    ('gkt', 'data.options.train_examples_per_class', 2.5, 'must be an integer >= 1', {}),
    ('baseline', 'train_accuracy_examples', 0, 'must be an integer >= 1', {}),
    ('baseline', 'total_epochs', -2.0, 'must be a number > 0', {}),
    ('baseline', 'log_every_epochs', 0.0, 'must be a number > 0', {}),
    ('stimulative', 'method.max_shortening', (3, 4, 3),
     'one M_s per stage with 1 <= M_s <= n_s; the stage sizes are (3, 3, 3)', {}),
    ('stimulative', 'method.max_shortening', (3, 0, 3), 'non-empty sequence of integers >= 1',
     {}),
    ('ekd_fws', 'method.dropout_rate', 1.0, 'must be a probability in [0, 1)', {}),
    ('reskd', 'method.residual_target', 'logit', "unknown residual target; allowed: ('logits'",
     {}),
    ('kd', 'method.teacher', '/nonexistent/run', 'no config.json there: must be the workdir',
     {}),
    ('reskd', 'method.res_students', '/a/run', 'must be a list of workdirs', {}),
    ('ekd_fws', 'method.kd_weight', -1.0, 'must be a number >= 0', {}),
    ('ekd_fws', 'method.temperature', 0.0, 'must be a number > 0', {}),
    # booleans
    ('gkt', 'method.normalize_logits', 'yes', 'must be True or False', {}),
    ('ekd_fws', 'method.detach_teacher', 'no', 'must be True or False', {}),
    ('gkt', 'evals.subnet_chains.final_only', 1, 'must be True or False', {}),
    # devices
    ('baseline', 'data.batch_size', 100,
     'divisible by the 8 devices; use a multiple of the device count, e.g. 96 or 104',
     {'num_devices': 8}),
    ('baseline', 'data.batch_size', 3,
     'divisible by the 8 devices; use a multiple of the device count, e.g. 8',
     {'num_devices': 8}),
    ('baseline', 'data.eval_batch_size', 4, 'must be >= the device count 8',
     {'num_devices': 8}),
    # fields nothing reads
    ('stochastic_depth', 'method.drop_prob', 0.1,
     "not a field of method 'stochastic_depth'; accepted: ('bn_recalibration_images'", {}),
    ('gkt', 'method.tempreature', 1.0, "not a field of method 'gkt'; accepted: (", {}),
    ('ekd_fws', 'method.levels', 3, "not a field of method 'ekd_fws'; accepted: (", {}),
    ('baseline', 'optim.weight_decy', 1e-4, "not a field of the optimizer; accepted: (", {}),
    ('baseline', 'model.shorcut', 'pad', "not a field of the model 'resnet20'; accepted: (", {}),
    ('gkt', 'evals.subnet_chains.gamma', 0.5,
     "not a field of evaluator 'subnet_chains' with sampler='bernoulli'; accepted: (", {}),
    ('gkt', 'evals.block_deletion.seed', 0,
     "not a field of evaluator 'block_deletion'; accepted: ('final_only', 'type')", {}),
]


class ErrorTest(parameterized.TestCase):

  def assert_one_line_error(self, config, field, value, allowed, num_devices=None):
    with self.assertRaises(ValueError) as caught:
      validate.validate_config(config, num_devices=num_devices)
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertStartsWith(message, f'config.{field}={value!r}: ')
    self.assertIn(allowed, message)

  @parameterized.parameters(*_ERRORS)
  def test_bad_field(self, method, field, value, allowed, kwargs):
    config = _with(common.get_config(method, 'digits'), field, value)
    self.assert_one_line_error(config, field, value, allowed, **kwargs)

  def test_inverted_stochastic_depth_needs_positive_survival(self):
    config = _with(common.get_config('stochastic_depth', 'digits'), 'method.test_scaling',
                   False)
    validate.validate_config(config)
    config = _with(config, 'method.final_survival', 0.0)
    self.assert_one_line_error(config, 'method.final_survival', 0.0,
                               'must be a probability in (0, 1]')

  def test_both_durations(self):
    config = _with(common.get_config('baseline', 'digits'), 'total_steps', 10)
    self.assert_one_line_error(config, 'total_epochs', 30.0,
                               'set only one of total_steps and total_epochs '
                               '(total_steps=10 is also set)')

  def test_no_duration(self):
    config = _with(common.get_config('baseline', 'digits'), 'total_epochs', None)
    self.assert_one_line_error(config, 'total_steps', None,
                               'required: set total_steps or total_epochs')

  def test_evaluator_sampler_kwargs_follow_the_sampler(self):
    config = common.get_config('gkt', 'digits')
    config = _with(config, 'evals.subnet_chains', dict(
        type='subnet_chains', sampler='geometric', gamma=2.0, levels=2))
    validate.validate_config(config)
    config = _with(config, 'evals.subnet_chains.drop_prob', 0.2)
    self.assert_one_line_error(
        config, 'evals.subnet_chains.drop_prob', 0.2,
        "not a field of evaluator 'subnet_chains' with sampler='geometric'")

  def test_missing_section(self):
    config = common.get_config('baseline', 'digits')
    del config['model']
    self.assert_one_line_error(config, 'model', None, 'required')

  def test_config_dict_value_is_shown_on_one_line(self):
    config = _with(common.get_config('baseline', 'digits'), 'method.label_smoothing',
                   {'a': 1, 'b': 2})
    self.assert_one_line_error(config, 'method.label_smoothing', {'a': 1, 'b': 2},
                               'must be a probability')

  def test_bad_device_count(self):
    with self.assertRaisesRegex(ValueError, r'^num_devices=0: must be an integer >= 1$'):
      validate.validate_config(common.get_config('baseline', 'digits'), num_devices=0)


class LabelsTest(parameterized.TestCase):

  def test_valid_labels_pass(self):
    validate.validate_labels(np.array([0, 9, 3], np.int32), 10, 'train')
    validate.validate_labels(np.zeros((0,), np.int64), 10, 'test')

  def test_digits_labels_pass(self):
    dataset = data_lib.load_dataset('digits')
    validate.validate_labels(dataset.train_labels, dataset.num_classes, 'train')
    validate.validate_labels(dataset.test_labels, dataset.num_classes, 'test')

  @parameterized.parameters(
      ([0, 10, 3], 'test labels hold 1 of 3 values outside [0, 10): 10 (first at index 1)'),
      ([-1, 5, 12, 12], 'train labels hold 3 of 4 values outside [0, 10): -1, 12 (first at '
                        'index 0)'),
      (list(range(10, 20)), 'train labels hold 10 of 10 values outside [0, 10): 10, 11, 12, '
                            '13, 14, ... (first at index 0)'))
  def test_out_of_range(self, labels, expected):
    split = 'test' if expected.startswith('test') else 'train'
    with self.assertRaises(ValueError) as caught:
      validate.validate_labels(np.array(labels, np.int32), 10, split)
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertStartsWith(message, expected)
    self.assertEndsWith(message, 'allowed: class indices 0..9')

  def test_float_labels(self):
    with self.assertRaisesRegex(ValueError,
                                r'^train labels have dtype float32: must be integers in \[0, 3\)$'):
      validate.validate_labels(np.array([0.0, 1.0], np.float32), 3, 'train')


if __name__ == '__main__':
  absltest.main()
