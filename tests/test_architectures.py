"""Networks beyond the ResNet through the registry: a ViT and a Wide ResNet.

Each is maskable as the ResNets are (a dropped block does nothing and learns nothing, the
residual scale is stochastic depth's rule, FLOPs split per block) and is trained by the
baseline, stochastic depth, stimulative training and GKT through the trainer.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
import pytest

from gkt_jax import methods, models
from gkt_jax.models import cost
from gkt_jax.train import train_and_evaluate, validate
import workers

# Small members of each family (tests run on 2 CPU cores).
_SMALL = {
    'vit_ti': dict(depth=3, width=16, heads=2, mlp_ratio=2),
    'wrn16_4': dict(),
}


def _model(arch, num_classes=5):
  return models.build_model(arch, num_classes, conv_impl='xla', **_SMALL[arch])


def _all_zero(tree) -> bool:
  return all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(tree))


class MaskableTest(parameterized.TestCase):

  @parameterized.parameters('vit_ti', 'wrn16_4')
  def test_a_dropped_block_does_nothing_and_learns_nothing(self, arch):
    model = _model(arch)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = model.init(jax.random.key(1), x)
    blocks = model.num_blocks
    self.assertEqual(sum(model.stage_sizes), blocks)
    full = model.apply(variables, x)[0]
    np.testing.assert_allclose(model.apply(variables, x, keep_mask=jnp.ones(blocks, bool))[0],
                               full, rtol=1e-5, atol=1e-5)
    mask = jnp.ones(blocks, bool).at[1].set(False)  # stage 1's second block (identity)
    dropped = model.apply(variables, x, keep_mask=mask)[0]
    self.assertGreater(float(jnp.max(jnp.abs(dropped - full))), 1e-4)
    # Stochastic depth's test-time rule: a zero scale is the dropped block.
    np.testing.assert_allclose(
        model.apply(variables, x, residual_scale=jnp.ones(blocks).at[1].set(0.0))[0], dropped,
        rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(model.apply({**variables, 'params': p}, x,
                                                   keep_mask=mask)[0] ** 2))(variables['params'])
    self.assertTrue(_all_zero(grads['stage1_block2']['branch']))
    self.assertFalse(_all_zero(grads['stage1_block1']['branch']))
    with self.assertRaisesRegex(ValueError, rf'keep_mask has shape \({blocks + 1},\); this '
                                rf'network has {blocks} residual blocks'):
      model.apply(variables, x, keep_mask=jnp.ones(blocks + 1, bool))

  def test_a_dropped_wide_block_keeps_its_batchnorm_statistics(self):
    model = _model('wrn16_4')
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    variables = model.init(jax.random.key(1), x)
    mask = jnp.ones(model.num_blocks, bool).at[1].set(False)
    _, updates = model.apply(variables, x, keep_mask=mask, train=True, mutable=['batch_stats'])
    before, after = variables['batch_stats'], updates['batch_stats']
    for name in ('bn1', 'bn2'):
      np.testing.assert_array_equal(after['stage1_block2']['branch'][name]['mean'],
                                    before['stage1_block2']['branch'][name]['mean'])
    self.assertFalse(np.array_equal(after['stage1_block1']['branch']['bn2']['mean'],
                                    before['stage1_block1']['branch']['bn2']['mean']))

  @parameterized.parameters(('vit_ti', (32, 32, 3), 16, 4), ('vit_ti', (28, 28, 1), 49 * 4, 2),
                            ('wrn16_4', (32, 32, 3), None, None))
  def test_flops_split_into_blocks_and_agree_with_xla(self, arch, shape, tokens, patch):
    model = models.build_model(arch, 10, conv_impl='xla')
    if tokens is not None:
      self.assertEqual(model.patch_side(shape[0]), patch)
      stem = model.apply(model.init(jax.random.key(0), jnp.zeros((1,) + shape)),
                         jnp.zeros((1,) + shape))[1]['stem']
      self.assertEqual(stem.shape[1], (shape[0] // patch) ** 2)
    fixed, per_block = cost.block_flops(model, shape)
    total = cost.forward_flops(model, shape)
    self.assertEqual(per_block.shape, (model.num_blocks,))
    self.assertTrue(np.all(per_block > 0))
    self.assertAlmostEqual(fixed + per_block.sum(), total, delta=1.0)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
    xla = cost.xla_forward_flops(lambda v, x: model.apply(v, x), variables, shape)
    # XLA also counts normalisation and activations, and only the taps inside the padding.
    self.assertBetween(total / xla, 0.9, 1.12)

  def test_fields_are_checked_by_name(self):
    with self.assertRaisesRegex(ValueError, r"model\.shortcut is not a field of vit_ti; "
                                r"accepted: \('conv_impl', 'depth'"):
      models.build_model('vit_ti', 10, shortcut='pad')
    with self.assertRaisesRegex(ValueError, r'model\.width=30 must be a multiple of '
                                r'model\.heads=4'):
      models.build_model('vit_ti', 10, width=30, heads=4)
    config = workers.smoke_config('baseline', {'model': {'arch': 'vit_ti', 'width': 30,
                                                         'heads': 4}})
    with self.assertRaisesRegex(validate.ConfigError, r'^config\.model\.width=30 must be'):
      validate.validate_config(config)


class RegistryTest(absltest.TestCase):

  def test_a_network_registered_later_is_found_by_name(self):
    name = 'vit_ti_depth2'
    models.register(name, lambda num_classes, **fields: models.vit.build_vit(
        'ti', num_classes, depth=2, **fields), ('conv_impl', 'dtype'))
    self.addCleanup(models.ARCHITECTURES.pop, name)
    self.assertEqual(models.build_model(name, 3).num_blocks, 2)
    config = workers.smoke_config('gkt', {'model': {'arch': name, 'conv_impl': 'xla'}})
    validate.validate_config(config, num_devices=1)
    with self.assertRaisesRegex(validate.ConfigError, r"config\.model\.width=8: not a field "
                                rf"of the model '{name}'"):
      validate.validate_config(workers.smoke_config('gkt', {'model': {'arch': name,
                                                                      'width': 8}}))


class TrainedTest(parameterized.TestCase):
  """Subnet methods train each network through the trainer (digits, 2 steps): GKT (masks,
  nested chains, the scan over subnets) in the default suite, all four methods in the slow
  one."""

  def _train(self, arch, method):
    config = workers.smoke_config(method, {
        'model': dict(arch=arch, **_SMALL[arch]), 'total_steps': 2, 'log_every_steps': 1,
        'eval_every_steps': 2})
    config.evals.depth = dict(type='depth_curve', num_subnets=2, sampler='prefix', seed=0)
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(config, workdir)
    self.assertEqual(summary['steps'], 2)
    self.assertTrue(np.isfinite(summary['full_accuracy']))
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      losses = [r['loss'] for r in map(json.loads, f) if 'loss' in r]
    self.assertLen(losses, 2)
    self.assertTrue(np.all(np.isfinite(losses)))
    # The full network is the depth curve's last point: the same network evaluated.
    self.assertAlmostEqual(summary['depth_curve'][-1][1], summary['full_accuracy'])

  @parameterized.parameters('vit_ti', 'wrn16_4')
  def test_gkt_trains_it(self, arch):
    self._train(arch, 'gkt')

  @parameterized.product(arch=('vit_ti', 'wrn16_4'),
                         method=('baseline', 'stochastic_depth', 'stimulative'))
  @pytest.mark.slow  # below the product, so that every generated test carries it
  def test_other_subnet_methods_train_it(self, arch, method):
    self._train(arch, method)

  def test_ekd_refuses_a_network_without_resnet_stages(self):
    model = _model('vit_ti')
    with self.assertRaisesRegex(ValueError, r'ekd_fws needs a ResNet of >= 2 stages .*got ViT '
                                r'with stage_sizes=\(3,\)'):
      methods.get_method({'name': 'ekd_fws'}, model)


if __name__ == '__main__':
  absltest.main()
