"""The settings classes of gkt_jax/config/: importable without JAX, and in agreement with the
code that uses them (the networks' fields and defaults, the evaluators' arguments, the
registries of methods and datasets)."""

import dataclasses
import inspect
import subprocess
import sys

from absl.testing import absltest, parameterized
import jax.numpy as jnp

from gkt_jax import data as data_lib
from gkt_jax import evaluate, methods, models
from gkt_jax.config import data as data_config
from gkt_jax.config import evals as evals_config
from gkt_jax.config import method as method_config
from gkt_jax.config import model as model_config
from gkt_jax.models import resnet, vit, wide_resnet
from gkt_jax.settings import ConfigError


def _imports_jax(statement: str) -> str:
  """The names of the JAX and Flax modules loaded by `statement` in a fresh interpreter."""
  code = (f'import sys\n{statement}\n'
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))")
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        check=True).stdout.strip()


class JaxFreeTest(absltest.TestCase):

  def test_the_settings_import_neither_jax_nor_flax(self):
    self.assertEqual(_imports_jax(
        'from gkt_jax.config import data, evals, method, model, names, optim, run'), '[]')
    self.assertNotEqual(_imports_jax('import jax'), '[]')  # the probe sees JAX when loaded


def _module_default(cls, name):
  field = {f.name: f for f in dataclasses.fields(cls)}[name]
  return field.default


class ModelSettingsTest(parameterized.TestCase):

  @parameterized.parameters(
      (model_config.ResNetSettings, resnet.ResNet, models.build_resnet),
      (model_config.WideResNetSettings, wide_resnet.WideResNet, None),
      (model_config.ViTSettings, vit.ViT, None))
  def test_fields_are_the_networks(self, settings_cls, module, builder):
    accepted = set(models.module_fields(module)) | (
        set(inspect.signature(builder).parameters) - {'arch', 'num_classes', 'kwargs'}
        if builder else set())
    self.assertEmpty(set(settings_cls.names()) - {'arch'} - accepted,
                     'settings fields the network does not take')

  def test_a_dtype_by_name_is_the_networks_default(self):
    self.assertEqual(jnp.dtype(model_config.ResNetSettings().dtype), _module_default(
        resnet.ResNet, 'dtype'))

  def test_every_registered_network_has_settings(self):
    self.assertEqual(set(models.ARCHITECTURES), set(model_config.ARCHITECTURES))
    for name, entry in models.ARCHITECTURES.items():
      self.assertEqual(entry.fields, tuple(sorted(
          set(model_config.ARCHITECTURES[name].names()) - {'arch'})), name)

  def test_read_picks_the_family_by_name(self):
    self.assertIsInstance(model_config.read({'arch': 'wrn16_4', 'dropout_rate': 0.3}),
                          model_config.WideResNetSettings)
    self.assertEqual(model_config.family('vit_s'), 'vit')
    with self.assertRaisesRegex(ConfigError, r"^config\.model\.dropout_rate=0\.3: not a field "
                                r"of the model 'resnet20'"):
      model_config.read({'arch': 'resnet20', 'dropout_rate': 0.3})
    with self.assertRaisesRegex(ConfigError, r'^config\.model\.arch=None: required'):
      model_config.read({'width_multiplier': 2.0})


class EvalSettingsTest(parameterized.TestCase):

  @parameterized.parameters(*evals_config.EVALUATORS)
  def test_defaults_are_the_evaluators(self, kind):
    params = inspect.signature(evaluate.EVALUATORS[kind]).parameters
    settings_cls = evals_config.EVALUATORS[kind]
    for name in set(settings_cls.names()) - {'type', 'final_only'}:
      default = getattr(settings_cls(), name)
      if name in params:
        self.assertEqual(default, params[name].default, name)
      else:  # a sampler's keyword argument (None: the sampler's default)
        self.assertIsNone(default, name)
        self.assertTrue(any(p.kind == p.VAR_KEYWORD for p in params.values()), kind)

  def test_no_evals_is_the_full_network_and_the_methods_own(self):
    full = evals_config.EvalSettings(type='full')
    self.assertEqual(evals_config.read(None), {'full': full})
    self.assertEqual(evals_config.read(None, method='gkt'), {'full': full})
    self.assertEqual(evals_config.read(None, method='ekd_fws'), {
        'full': full, 'paths': evals_config.EvalSettings(type='classmate_paths')})

  def test_arguments_are_what_the_evaluators_take(self):
    entry = evals_config.read({'curve': {'type': 'depth_curve', 'max_shortening': (1, 1, 1)}})
    self.assertEqual(entry['curve'].arguments(), dict(
        type='depth_curve', final_only=False, sampler='prefix', seed=1,
        max_shortening=(1, 1, 1), num_subnets=16))

  def test_max_shortening_is_checked_against_the_stage_sizes(self):
    entry = evals_config.read({'curve': {'type': 'depth_curve', 'max_shortening': (1, 3, 1)}})
    entry['curve'].check_stage_sizes('evals.curve', (3, 3, 3))
    entry = evals_config.read({'curve': {'type': 'depth_curve', 'max_shortening': (1, 4, 1)}})
    with self.assertRaisesRegex(ConfigError, r'^config\.evals\.curve\.max_shortening=\(1, 4, '
                                r'1\): one M_s per stage with 1 <= M_s <= n_s; the stage sizes '
                                r'are \(3, 3, 3\)'):
      entry['curve'].check_stage_sizes('evals.curve', (3, 3, 3))


class MethodAndDataSettingsTest(absltest.TestCase):

  def test_each_method_reads_its_settings_from_the_registry(self):
    self.assertEqual({name: cls.Settings for name, cls in methods.REGISTRY.items()},
                     method_config.METHODS)
    self.assertEqual(method_config.defaults('gkt'), methods.REGISTRY['gkt'].default_config())

  def test_the_datasets_are_those_of_the_data_registry(self):
    self.assertEqual(data_config.DATASETS, list(data_lib.DATASETS))

  def test_data_defaults(self):
    settings = data_config.read({'name': 'digits', 'batch_size': 64,
                                 'augment': {'pad': 1, 'flip': False}})
    self.assertEqual(settings.eval_batch_size, 500)
    self.assertIsNone(settings.options)
    self.assertEqual(settings.augment.arguments(), {'pad': 1})
    with self.assertRaisesRegex(ConfigError, r'^config\.data\.batch_size=None: required'):
      data_config.read({'name': 'digits'})


if __name__ == '__main__':
  absltest.main()
