"""Networks beyond the ResNet through the registry: a ViT and a Wide ResNet.

Each is maskable as the ResNets are (a dropped block does nothing and learns nothing, saves
only its linear layers' outputs for the backward and costs a fraction of a kept block, the
residual scale is stochastic depth's rule, FLOPs split per block) and is trained by the
baseline, stochastic depth, stimulative training and GKT through the trainer.
"""

import contextlib
import functools
import io
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized
import pytest

from experiments import bench_step
from gkt_jax import methods, models
from gkt_jax.config import model as model_config
from gkt_jax.models import cost, wide_resnet
from gkt_jax.train import checkpoint, train_and_evaluate, validate
from gkt_jax.train.step import init_state
import workers

# Small members of each family (tests run on 2 CPU cores); wrn16_1 is registered here.
_SMALL = {
    'vit_ti': dict(depth=3, width=16, heads=2, mlp_ratio=2),
    'wrn16_4': dict(),
    'wrn16_1': dict(),
}


def setUpModule():
  """WRN-16-1 (widths 16, 32, 64; two blocks a stage, so subnets drop blocks): a Wide ResNet
  small enough to train in the default suite."""
  models.register('wrn16_1', functools.partial(wide_resnet.WideResNet, 16, 1),
                  model_config.WideResNetSettings)


def tearDownModule():
  models.unregister('wrn16_1')


def _model(arch, num_classes=5):
  return models.build_model(arch, num_classes, conv_impl='xla', **_SMALL[arch])


def _all_zero(tree) -> bool:
  return all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(tree))


def _cond_residuals(model, variables, x) -> list[tuple[int, ...]]:
  """Shapes of what the backward of a train-mode forward with a traced keep mask reads from
  the blocks' conds (every one is written as zeros by a dropped block), sorted."""
  def loss(params, keep_mask):
    (logits, _), _ = model.apply({**variables, 'params': params}, x, keep_mask=keep_mask,
                                 train=True, mutable=['batch_stats'])
    return jnp.sum(logits)

  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    jax.ad_checkpoint.print_saved_residuals(loss, variables['params'],
                                            jnp.ones(model.num_blocks, bool))
  found = re.findall(r'^\w+\[([\d,]*)\] output of cond\b', printed.getvalue(), re.MULTILINE)
  return sorted(tuple(int(d) for d in dims.split(',') if d) for dims in found)


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

  @parameterized.parameters('vit_ti', 'wrn16_4')
  def test_a_masked_block_saves_only_its_linear_outputs(self, arch):
    # As a ResNet block saves its convolution outputs: a ViT block its qkv, proj and mlp1
    # outputs (mlp2's is not read), never the attention probabilities [N, heads, T, T] or a
    # normalised value; a WRN block its first convolution's output (BN2's input; the
    # second's is not read).
    model = _model(arch)
    x = jnp.ones((2, 8, 8, 3))
    saved = _cond_residuals(model, model.init(jax.random.key(0), x), x)
    if arch == 'vit_ti':  # 8x8 pixels in 2x2 patches: 16 tokens of width 16
      per_block = [(2, 16, 16), (2, 16, 3 * 16), (2, 16, 2 * 16)]
      expected = per_block * model.depth
    else:  # stages of 2 blocks at 8x8x64, 4x4x128 and 2x2x256
      expected = [(2, 8, 8, 64)] * 2 + [(2, 4, 4, 128)] * 2 + [(2, 2, 2, 256)] * 2
    self.assertEqual(saved, sorted(expected))
    resnet = models.build_model('resnet14', 5, conv_impl='xla')
    resnet_saved = _cond_residuals(resnet, resnet.init(jax.random.key(0), x), x)
    self.assertLessEqual(len(saved) / model.num_blocks, len(resnet_saved) / resnet.num_blocks)

  def test_a_dropped_block_costs_at_most_a_quarter_of_a_kept_one(self):
    # Bytes written by the blocks' cond branches in the compiled train-mode gradient
    # (bench_step --dropped_block), dropped over kept; a ResNet's at the same sizes.
    resnet = bench_step.dropped_block_cost('resnet14', 8, 32, conv_impl='xla')
    for arch in ('vit_ti', 'wrn16_1'):
      row = bench_step.dropped_block_cost(arch, 8, 32, conv_impl='xla', **_SMALL[arch])
      self.assertEqual(row['conds'], 2 * row['blocks'])  # a forward and a backward cond each
      self.assertLessEqual(row['dropped_over_kept'], bench_step.MAX_DROPPED_OVER_KEPT, arch)
      self.assertLessEqual(row['dropped_over_kept'], resnet['dropped_over_kept'], arch)

  def test_wide_resnet_dropout(self):
    # WRN-10-1: one block a stage, the smallest to compile.
    model = wide_resnet.WideResNet(10, 1, 5, conv_impl='xla')
    dropping = wide_resnet.WideResNet(10, 1, 5, conv_impl='xla', dropout_rate=0.3)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x)

    @jax.jit
    @functools.partial(jax.value_and_grad, argnums=0)
    def loss(params, keep_mask, seed):
      (logits, _), _ = dropping.apply({**variables, 'params': params}, x, keep_mask=keep_mask,
                                      train=True, mutable=['batch_stats'],
                                      rngs={'dropout': jax.random.key(seed)})
      return jnp.sum(logits ** 2)

    # Evaluation is the network without dropout; so is training at rate 0 (it needs no key).
    np.testing.assert_array_equal(dropping.apply(variables, x)[0], model.apply(variables, x)[0])
    model.apply(variables, x, train=True, mutable=['batch_stats'])
    # Training draws masks from the dropout key, the same inside a block's cond (and in its
    # recomputation for the backward) as outside it.
    value, unmasked = loss(variables['params'], None, 0)
    masked_value, masked = loss(variables['params'], jnp.ones(model.num_blocks, bool), 0)
    self.assertAlmostEqual(float(masked_value), float(value), places=3)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
                 masked, unmasked)
    self.assertNotEqual(float(loss(variables['params'], None, 1)[0]), float(value))
    dropped = loss(variables['params'], jnp.array([True, False, True]), 0)[1]
    self.assertTrue(_all_zero(dropped['stage2_block1']['branch']))
    self.assertFalse(_all_zero(dropped['stage3_block1']['branch']))
    with self.assertRaisesRegex(ValueError, r"model\.dropout_rate=0\.3: a train-mode apply "
                                r"needs a dropout key, apply\(\.\.\., rngs=\{'dropout': key\}\)"):
      dropping.apply(variables, x, train=True, mutable=['batch_stats'])
    with self.assertRaisesRegex(ValueError, r'model\.dropout_rate=1\.0: must be a number in '
                                r'\[0, 1\)'):
      models.build_model('wrn16_4', 5, dropout_rate=1.0)

  def test_a_vit_takes_other_input_sizes_with_its_init_patches(self):
    # ST++'s subnet_resize: a network initialised on 32x32 inputs (4x4 patches, 8x8 tokens)
    # applied to 26x26 and 14x14 ones: zero-padded to 28x28 and 16x16, 7x7 and 4x4 tokens.
    model = _model('vit_ti')
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    self.assertEqual(variables['params']['position'].shape, (1, 64, 16))
    position = jnp.broadcast_to(jax.random.normal(jax.random.key(1), (1, 1, 16)), (1, 64, 16))
    variables = {'params': {**variables['params'], 'position': position}}
    stem_of = jax.jit(lambda x: model.apply(variables, x)[1]['stem'])
    for side, grid in ((32, 8), (26, 7), (14, 4)):
      x = jax.random.normal(jax.random.key(side), (2, side, side, 3))
      stem = stem_of(x)
      self.assertEqual(stem.shape, (2, grid * grid, 16))
      # A position embedding that is the same at every token stays so when resized.
      padded = jnp.pad(x, ((0, 0), (0, 4 * grid - side), (0, 4 * grid - side), (0, 0)))
      patches = padded.reshape(2, grid, 4, grid, 4, 3).transpose(0, 1, 3, 2, 4, 5)
      embedded = patches.reshape(2, grid * grid, 48) @ variables['params']['stem_conv'][
          'kernel'].reshape(48, 16)
      np.testing.assert_allclose(stem, embedded + position[:, :1], rtol=1e-4, atol=1e-4)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
        {'params': p}, jnp.ones((1, 26, 26, 3)))[0] ** 2)))(variables['params'])
    self.assertEqual(grads['position'].shape, (1, 64, 16))
    self.assertGreater(float(jnp.max(jnp.abs(grads['position']))), 0)
    with self.assertRaisesRegex(ValueError, r'input of 31x31 pixels does not split into 2x2 '
                                r'patches \(model\.patch_size\)'):  # init: no padding
      model.init(jax.random.key(0), jnp.zeros((1, 31, 31, 3)))

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

  @parameterized.parameters(('vit_ti', (32, 32, 3), 64, 4), ('vit_ti', (28, 28, 1), 196, 2),
                            ('wrn16_4', (32, 32, 3), None, None))
  def test_flops_split_into_blocks_and_agree_with_xla(self, arch, shape, tokens, patch):
    model = models.build_model(arch, 10, conv_impl='xla')
    if tokens is not None:
      self.assertEqual(model.patch_side(shape[0]), patch)
      stem = model.apply(model.init(jax.random.key(0), jnp.zeros((1,) + shape)),
                         jnp.zeros((1,) + shape))[1]['stem']
      self.assertEqual(stem.shape[1], tokens)
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
    self.addCleanup(models.unregister, name)
    self.assertEqual(models.build_model(name, 3).num_blocks, 2)
    config = workers.smoke_config('gkt', {'model': {'arch': name, 'conv_impl': 'xla'}})
    validate.validate_config(config, num_devices=1)
    with self.assertRaisesRegex(validate.ConfigError, r"config\.model\.width=8: not a field "
                                rf"of the model '{name}'"):
      validate.validate_config(workers.smoke_config('gkt', {'model': {'arch': name,
                                                                      'width': 8}}))


class TrainedTest(parameterized.TestCase):
  """Subnet methods train each network through the trainer (digits, 2 steps, no weight decay,
  so that only gradients move a weight): GKT (masks, nested chains, the scan over subnets) in
  the default suite, all four methods in the slow one."""

  def _train(self, arch, method, fields=None):
    config = workers.smoke_config(method, {
        'model': dict(arch=arch, **_SMALL[arch]), 'total_steps': 2, 'log_every_steps': 1,
        'eval_every_steps': 2, 'optim.weight_decay': 0.0, **(fields or {})})
    config.evals.depth = dict(type='depth_curve', num_subnets=2, sampler='prefix', seed=0)
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(config, workdir)
    self.assertEqual(summary['steps'], 2)
    plain = models.from_config(config.model, 10)
    # The depth curve's subnets keep more and more blocks, the last all of them.
    kept = [point[0] for point in summary['depth_curve']]
    self.assertEqual(kept, sorted(set(kept)))
    self.assertEqual(kept[-1], plain.num_blocks)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [r for r in map(json.loads, f) if 'loss' in r]
    self.assertEqual([r['step'] for r in rows], [1, 2])
    if method == 'gkt':  # nested subnets: each keeps a subset of its parent's blocks
      least = len(plain.stage_sizes) / plain.num_blocks  # every stage's first block
      for r in rows:
        fractions = [1.0] + [r[f'kept/level{level}'] for level in (1, 2, 3)] + [least]
        self.assertEqual(fractions, sorted(fractions, reverse=True), r)
      self.assertLess(min(r['kept/level3'] for r in rows), 1.0)
    if method != 'stochastic_depth':  # which may drop a block at both steps
      self._assert_every_block_moved(config, plain, workdir)

  def _assert_every_block_moved(self, config, plain, workdir):
    """Every weight of every residual branch differs from its initial value: gradients reach
    each block through its cond (the method runs the full network at every step)."""
    method = methods.get_method(config.method, plain)
    initial = init_state(config, method.model, method, optax.identity(), (8, 8, 1)).params
    with checkpoint.read_only(workdir) as source:
      trained = source.restore_raw(source.all_steps()[-1])['params']
    blocks = [name for name in initial if '_block' in name]
    self.assertLen(blocks, plain.num_blocks)
    for name in blocks:
      moved = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)),
                           initial[name]['branch'], trained[name]['branch'])
      self.assertTrue(all(jax.tree.leaves(moved)), f'{name}: {moved}')

  @parameterized.parameters('vit_ti', 'wrn16_1')
  def test_gkt_trains_it(self, arch):
    self._train(arch, 'gkt')

  def test_st_plus_plus_resizes_a_vits_subnets(self):
    # 8x8 digits in 2x2 patches; the subnets see them at 3, 5 and 6 pixels a side: padded to
    # whole patches, with the 4x4 position embeddings resized to 2x2 and 3x3.
    config_method = workers.smoke_config('stimulative').method
    self.assertEqual(methods.get_method(
        dict(config_method, subnet_resize=True), _model('vit_ti')).resize_sizes(8), (3, 5, 6, 8))
    self._train('vit_ti', 'stimulative', {'method.subnet_resize': True})

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


class DropoutTrainingTest(parameterized.TestCase):
  """A Wide ResNet's dropout (`model.dropout_rate`) in training: every method's train-mode
  pass gets a dropout key of its own, drawn beside the step's masks."""

  @parameterized.parameters('baseline', 'stochastic_depth', 'gkt', 'stimulative')
  def test_each_pass_drops_with_its_own_key(self, name):
    images = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    batch = {'images': images, 'labels': jnp.arange(8) % 5}
    key = jax.random.key(4)

    def step(rate, step_key):
      model = models.build_model('wrn16_1', 5, conv_impl='xla', dropout_rate=rate)
      method = methods.get_method({'name': name}, model)
      variables = model.init(jax.random.key(0), images, train=False)
      grads, (_, _, measurements) = jax.jit(method.gradients)(
          variables['params'], variables['batch_stats'], batch, step_key, method.init_state())
      return method, grads, measurements

    plain, plain_grads, plain_measured = step(0.0, key)
    dropping, grads, measured = step(0.3, key)
    self.assertFalse(plain.per_device_randomness)
    self.assertTrue(dropping.per_device_randomness)
    # The same masks (the step key's draws do not change), other losses: dropout dropped.
    np.testing.assert_array_equal(plain.masks_run(key), dropping.masks_run(key))
    self.assertNotEqual(float(plain_measured['loss']), float(measured['loss']))
    for tree in (plain_grads, grads):
      self.assertTrue(all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree)))
    # Another step key, other dropout masks; the same key, the same step.
    self.assertNotEqual(float(measured['loss']), float(step(0.3, jax.random.key(5))[2]['loss']))
    np.testing.assert_array_equal(measured['loss'], step(0.3, key)[2]['loss'])
    if name in ('gkt', 'stimulative'):  # the subnet passes drop with keys of their own
      model = dropping.model
      keys = [methods.base.dropout_key(model, key, i) for i in range(3)]
      self.assertLen({tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}, 3)
      self.assertIsNone(methods.base.dropout_key(plain.model, key, 0))

  def test_gkt_trains_a_wide_resnet_with_dropout(self):
    """Through the trainer (BatchNorm recalibration, a train-mode pass, included): the
    first step's loss differs from the same run's without dropout."""

    def first_loss(rate):
      config = workers.smoke_config('gkt', {
          'model': dict(arch='wrn16_1', conv_impl='xla', dropout_rate=rate), 'total_steps': 2,
          'log_every_steps': 1, 'eval_every_steps': 2, 'method.bn_recalibration_images': 32})
      workdir = self.create_tempdir().full_path
      summary = train_and_evaluate(config, workdir)
      self.assertEqual(summary['steps'], 2)
      self.assertTrue(np.isfinite(summary['full_accuracy']))
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [r for r in map(json.loads, f) if 'loss' in r]
      return rows[0]['loss']

    self.assertNotEqual(first_loss(0.3), first_loss(0.0))


if __name__ == '__main__':
  absltest.main()
