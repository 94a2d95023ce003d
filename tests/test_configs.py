"""Every experiment config file builds, for every method, without JAX; the CIFAR/ImageNet
configs follow the specs' recipes."""

import importlib
import pathlib
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow_datasets as tfds

from experiments import configs
from experiments.configs import common
from gkt_jax import data as data_lib
from gkt_jax import methods, models
from gkt_jax.train import validate


def _config_modules():
  """Every experiments/configs/<file>.py but the shared pieces, as a module name."""
  root = pathlib.Path(configs.__file__).parent
  return sorted(f'experiments.configs.{p.stem}' for p in root.glob('*.py')
                if p.stem not in ('__init__', 'common'))


def _takes_smoke(module) -> bool:
  """Whether a config file documents a ':smoke' argument."""
  return 'smoke' in (module.__doc__ or '')


# The methods that run on their own (the ResKD chain's stages run in reskd_chain.py).
_METHODS = tuple(sorted(set(methods.REGISTRY) - set(common.CHAIN_METHODS)))


class ConfigFilesTest(parameterized.TestCase):

  @parameterized.parameters(*common.DATASETS)
  def test_every_method_runs_on_every_dataset(self, dataset):
    for method in _METHODS:
      with self.subTest(method):
        config = common.get_config(method, dataset)
        self.assertEqual((config.method.name, config.data.name), (method, dataset))
        self.assertEqual(set(config.method), set(methods.REGISTRY[method].default_config()))

  def test_loading_a_config_imports_neither_jax_nor_flax(self):
    code = ('import sys\n'
            'from experiments.configs import cifar, common, digits, reskd_chain\n'
            'for d in common.DATASETS:\n'
            '  common.get_config("gkt", d, "smoke")\n'
            'reskd_chain.get_config("smoke")\n'
            'print(sorted({m.split(".")[0] for m in sys.modules} & {"jax", "flax"}))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            check=True, cwd=pathlib.Path(configs.__file__).parents[2])
    self.assertEqual(result.stdout.strip(), '[]')

  def test_get_config_names_the_missing_file(self):
    with self.assertRaisesRegex(ValueError, r"dataset='svhn': no config file; datasets with "
                                r"config files: \('digits'"):
      common.get_config('ekd_fws', 'svhn')
    with self.assertRaisesRegex(ValueError, r"method='gtk' is not one of \('baseline'"):
      common.get_config('gtk', 'digits')
    with self.assertRaisesRegex(ValueError, r"config argument method='kd' is not one of"):
      importlib.import_module('experiments.configs.digits').get_config('method=kd')

  @parameterized.parameters(*_config_modules())
  def test_builds_and_validates(self, name):
    module = importlib.import_module(name)
    arguments = [None] + (['smoke'] if _takes_smoke(module) else [])
    for arg in arguments:
      with self.subTest(arg=arg):
        for config in common.run_configs(module.get_config(arg)):  # a ResKD chain: stages
          validate.validate_config(config, num_devices=1)
          self.assertIn(config.data.name, data_lib.DATASETS)
          self.assertIn(config.model.arch, models.ARCHS)
          if arg == 'smoke':
            self.assertEqual(config.total_steps, 4)
    doc = module.__doc__
    self.assertIn(f"--config {name.replace('.', '/')}.py", doc)
    if config.data.name in ('cifar10', 'cifar100', 'imagenet2012'):
      # The docstring states how to prepare and launch, the expected result and the runtime.
      self.assertIn(f'tfds build {config.data.name} --file_format=array_record', doc)
      self.assertIn('Expected result', doc)
      self.assertIn('Runtime (an estimate, not a measurement)', doc)

  def test_cifar_configs_use_dataset_names_load_dataset_knows(self):
    for dataset in ('cifar10', 'cifar100'):
      config = common.get_config('gkt', dataset)
      self.assertEqual(config.data.name, dataset)
      self.assertIn(config.data.name, data_lib.DATASETS)

  @parameterized.parameters(('baseline', 'cifar10', None), ('stochastic_depth', 'cifar100', None),
                            ('gkt', 'cifar10', 'smoke'), ('gkt', 'imagenet2012', 'smoke'),
                            ('stimulative', 'imagenet2012', 'stpp,smoke'))
  def test_data_section_loads(self, method, dataset, arg):
    """load_dataset takes the config's name and options, train_batches its augment (mocked)."""
    config = common.get_config(method, dataset, arg)
    with tfds.testing.mock_data(num_examples=130, policy=tfds.testing.MockPolicy.USE_CODE):
      dataset = data_lib.load_dataset(config.data.name, data_dir=config.data.dir,
                                      **config.data.get('options', {}))
      batches = dataset.train_batches(config.data.batch_size, seed=config.seed,
                                      augment=dict(config.data.augment))
      images, labels = batches.get(0, slice(0, 2))
      eval_images, _, _ = next(iter(dataset.eval_batches(config.data.eval_batch_size)))
    self.assertEqual(images.shape, (2, *dataset.image_shape))
    self.assertEqual(eval_images.shape, (config.data.eval_batch_size, *dataset.image_shape))
    self.assertTrue(all(0 <= l < dataset.num_classes for l in labels))


class RecipesTest(parameterized.TestCase):

  @parameterized.parameters('baseline', 'stimulative', 'gkt')
  def test_stimulative_cifar_recipe(self, method):
    config = common.get_config(method, 'cifar100')
    self.assertEqual(config.model.arch, 'resnet56')
    self.assertEqual(config.data.batch_size, 128)
    self.assertEqual(dict(config.data.augment), dict(pad=4, flip=True))
    self.assertEqual(config.total_epochs, 200)
    self.assertEqual((config.optim.lr, config.optim.momentum, config.optim.nesterov,
                      config.optim.weight_decay, config.optim.schedule),
                     (0.1, 0.9, True, 1e-4, 'cosine'))

  def test_stochastic_depth_cifar_recipe(self):
    config = common.get_config('stochastic_depth', 'cifar10')
    self.assertEqual(config.model.arch, 'resnet110')
    self.assertEqual(config.total_epochs, 500)
    self.assertEqual(config.data.batch_size, 128)
    self.assertEqual((config.optim.schedule, tuple(config.optim.step_boundaries),
                      config.optim.step_factor, config.optim.weight_decay),
                     ('step', (0.5, 0.75), 0.1, 1e-4))
    self.assertEqual((config.method.final_survival, config.method.rule), (0.5, 'linear'))

  @parameterized.parameters(
      # dataset, arch, lr, kd_weight, att_weight, label smoothing, stem (ekd_fwsnet.md)
      ('cifar10', 'resnet20', 0.1, 1.5, 1.0, 0.0, None),
      ('cifar10', 'resnet56', 0.01, 6.0, 1.0, 0.0, None),
      ('cifar100', 'resnet32', 0.1, 0.6, 1.0, 0.0, None),
      ('cifar100', 'resnet18', 0.01, 1.0, 0.5, 0.2, 'cifar'))
  def test_ekd_cifar_recipe(self, dataset, arch, lr, kd_weight, att_weight, ls, stem):
    config = common.get_config('ekd_fws', dataset, f'arch={arch}')
    self.assertEqual((config.total_epochs, config.data.batch_size), (300, 128))
    self.assertEqual((config.optim.lr, config.optim.momentum, config.optim.nesterov,
                      config.optim.weight_decay, config.optim.schedule,
                      config.optim.step_factor), (lr, 0.9, False, 1e-4, 'step', 0.1))
    np.testing.assert_allclose(config.optim.step_boundaries, (150 / 300, 250 / 300))
    self.assertEqual((config.method.temperature, config.method.kd_weight,
                      config.method.att_weight, config.method.label_smoothing),
                     (3.0, kd_weight, att_weight, ls))
    self.assertEqual(config.model.get('stem'), stem)
    self.assertEqual(dict(config.evals.paths), {'type': 'classmate_paths'})
    # The baseline on the same recipe (the comparison the spec asks for) gets the same lr.
    baseline = common.get_config('baseline', dataset, f'arch={arch},recipe=ekd_fws')
    self.assertEqual(baseline.optim.to_dict(), config.optim.to_dict())
    with self.assertRaisesRegex(ValueError, "arch='resnet18' has no values in the spec"):
      common.get_config('ekd_fws', 'cifar10', 'arch=resnet18')

  def test_arguments(self):
    config = common.get_config('gkt', 'cifar10', 'arch=resnet110,recipe=stochastic_depth')
    self.assertEqual(config.model.arch, 'resnet110')
    self.assertEqual(config.optim.schedule, 'step')
    config = common.get_config('stimulative', 'cifar10', 'stpp,smoke')
    self.assertEqual((config.method.n_sub, config.method.normalize_logits), (6, True))
    self.assertEqual(config.total_steps, 4)
    with self.assertRaisesRegex(ValueError, r"config argument stpp: ST\+\+ is stimulative "
                                r"training's \(method='gkt'\)"):
      common.get_config('gkt', 'cifar10', 'stpp')
    with self.assertRaisesRegex(ValueError, "recipe='imagenet' is not one of"):
      common.get_config('gkt', 'cifar10', 'recipe=imagenet')
    with self.assertRaisesRegex(ValueError, r"arch='resnet57' is not one of \('resnet8'"):
      common.get_config('gkt', 'digits', 'arch=resnet57')
    with self.assertRaisesRegex(ValueError, r"unknown key 'recipe'; allowed: \['arch', "
                                r"'drop_path', 'method', 'pruned_depth', 'short', 'smoke', "
                                r"'stpp'\]"):
      common.get_config('gkt', 'fashion_mnist', 'recipe=ekd_fws')
    with self.assertRaisesRegex(ValueError, r"config argument drop_path: a setting of "
                                r"stochastic depth \(method='gkt'\)"):
      common.get_config('gkt', 'digits', 'drop_path')
    dropping = {arg: common.get_config('stochastic_depth', 'digits', arg).method
                for arg in ('drop_path', 'arch=vit_ti', '')}
    for arg in ('drop_path', 'arch=vit_ti'):
      self.assertEqual((dropping[arg].granularity, dropping[arg].test_scaling),
                       ('example', False), arg)
    self.assertNotIn('granularity', dropping[''])
    for dataset in common.DATASETS:  # the pruned-depth evaluator, by argument only
      self.assertNotIn('pruned_depth', common.get_config('gkt', dataset).evals)
      pruned = common.get_config('gkt', dataset, 'pruned_depth,smoke').evals.pruned_depth
      self.assertEqual(pruned.to_dict(), common.PRUNED_DEPTH_EVAL)

  @parameterized.parameters('vit_ti', 'wrn16_4', 'resnet56')
  def test_small_configs_take_any_registered_network(self, arch):
    for method in ('baseline', 'gkt'):
      config = common.get_config(method, 'fashion_mnist', f'arch={arch},smoke')
      self.assertEqual((config.model.arch, config.total_steps), (arch, 4))
      validate.validate_config(config, num_devices=1)

  @parameterized.parameters('vit_ti', 'wrn16_4')
  def test_small_configs_give_a_vit_adamw(self, arch):
    config = common.get_config('gkt', 'digits', f'arch={arch}')
    vit = arch.startswith('vit')
    self.assertEqual(config.optim.get('optimizer', 'sgd'), 'adamw' if vit else 'sgd')
    self.assertEqual(config.optim.lr, 1e-3 if vit else 0.1)

  def test_fashion_mnist_vit_runs_on_4x4_patches(self):
    # 49 tokens per 28x28 image: a ViT smoke run takes minutes on 2 cores (2x2: 196 tokens).
    config = common.get_config('gkt', 'fashion_mnist', 'arch=vit_ti,smoke')
    self.assertEqual(config.model.patch_size, 4)
    self.assertIsNone(common.get_config('gkt', 'digits', 'arch=vit_ti').model.patch_size)
    validate.validate_config(config, num_devices=1)

  @parameterized.product(method=('baseline', 'stochastic_depth', 'stimulative', 'gkt'),
                         dataset=('cifar10', 'cifar100'))
  def test_cifar_configs_run_every_family_with_its_recipe(self, method, dataset):
    wrn = common.get_config(method, dataset, 'arch=wrn28_10')
    self.assertEqual(dict(wrn.model), dict(arch='wrn28_10', conv_impl='auto', dropout_rate=0.3))
    self.assertEqual((wrn.optim.get('optimizer', 'sgd'), wrn.optim.lr, wrn.optim.schedule,
                      tuple(wrn.optim.step_boundaries), wrn.optim.step_factor,
                      wrn.optim.weight_decay, wrn.optim.nesterov, wrn.total_epochs),
                     ('sgd', 0.1, 'step', (0.3, 0.6, 0.8), 0.2, 5e-4, True, 200))
    vit = common.get_config(method, dataset, 'arch=vit_s')
    # patch_size None: 4x4 patches for CIFAR's 32x32 images (the network's rule).
    self.assertEqual(dict(vit.model), dict(arch='vit_s', conv_impl='auto', patch_size=None))
    self.assertEqual((vit.optim.optimizer, vit.optim.lr, vit.optim.weight_decay,
                      vit.optim.warmup_steps, vit.optim.schedule, vit.total_epochs),
                     ('adamw', 1e-3, 0.05, 1955, 'cosine', 200))
    self.assertNotIn('momentum', vit.optim)
    for config in (wrn, vit):
      validate.validate_config(config, num_devices=1)
    # The ResNets keep the files' own recipe.
    self.assertEqual(common.get_config(method, dataset).optim.get('optimizer', 'sgd'), 'sgd')

  @parameterized.parameters('stimulative', 'gkt')
  def test_imagenet_recipe(self, method):
    config = common.get_config(method, 'imagenet2012')
    self.assertEqual(config.model.arch, 'resnet50')
    self.assertEqual((config.data.batch_size, config.total_epochs), (512, 200))
    self.assertEqual((config.optim.lr, config.optim.nesterov, config.optim.weight_decay,
                      config.optim.schedule, config.optim.warmup_steps),
                     (0.2, True, 1e-4, 'cosine', 0))
    self.assertEqual(dict(config.data.augment), dict(random_resized_crop=True, flip=True))
    self.assertEqual(dict(config.data.options), dict(image_size=224, resize_size=256,
                                                     train_examples_per_class=None))

  def test_imagenet_stpp(self):
    config = common.get_config('stimulative', 'imagenet2012', 'stpp')
    self.assertEqual(tuple(config.method.max_shortening), (1, 2, 4, 1))
    self.assertEqual(config.method.bn_recalibration_images, 2000)
    validate.validate_config(config, num_devices=8)


class TiedFieldsTest(parameterized.TestCase):

  @parameterized.parameters(('gkt', 'digits', None), ('gkt', 'fashion_mnist', None),
                            ('gkt', 'cifar100', None), ('gkt', 'imagenet2012', 'smoke'),
                            ('gkt', 'digits', 'smoke'))
  def test_method_levels_reach_the_subnet_evaluators(self, method, dataset, arg):
    config = common.get_config(method, dataset, arg)
    config.lock()
    config.method.levels = 4  # as --config.method.levels=4 does
    for name in ('subnet_chains', 'nested_depth_curve'):
      self.assertEqual(config.evals[name].levels, 4, name)


if __name__ == '__main__':
  absltest.main()
