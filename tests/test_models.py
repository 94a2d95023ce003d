"""Tests of the maskable ResNets and the canonical-backward convolution."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from gkt_jax import models
from gkt_jax.models import ResNet, conv2d, resnet


def _tiny(stage_sizes=(3, 2), shortcut='pad', block='basic', **kw):
  return ResNet(stage_sizes=stage_sizes, stage_widths=(4, 8), num_classes=5, block=block,
                stem='cifar', stem_width=4, shortcut=shortcut, **kw)


def _init(model, batch=4, side=8, seed=0):
  x = jax.random.normal(jax.random.key(seed + 100), (batch, side, side, 3))
  variables = model.init(jax.random.key(seed), x, train=False)
  # Non-trivial running statistics, so eval-mode comparisons exercise them.
  variables = {**variables, 'batch_stats': jax.tree.map(
      lambda a: a + 0.1 * jax.random.uniform(jax.random.key(seed + 1), a.shape),
      variables['batch_stats'])}
  return x, variables


def _without_blocks(variables, stage_sizes, keep):
  """Variables of the network built without the dropped blocks (renumbered)."""
  out = {c: {k: v for k, v in tree.items() if '_block' not in k}
         for c, tree in variables.items()}
  index, sizes = 0, []
  for s, size in enumerate(stage_sizes):
    new_j = 0
    for j in range(size):
      if keep[index]:
        new_j += 1
        for c in variables:
          block = variables[c].get(f'stage{s + 1}_block{j + 1}')
          if block is not None:
            out[c][f'stage{s + 1}_block{new_j}'] = block
      index += 1
    sizes.append(new_j)
  return out, tuple(sizes)


def _masked_grads(model, variables, x, keep=(True, False, True, True, False)):
  """Parameter gradients and new batch stats of a masked (keep=None: plain) training
  forward."""
  def loss(params):
    (logits, _), stats = model.apply({**variables, 'params': params}, x,
                                     keep_mask=None if keep is None else jnp.asarray(keep),
                                     train=True,
                                     mutable=['batch_stats'])
    return jnp.mean(logits ** 2), stats
  return jax.jit(jax.grad(loss, has_aux=True))(variables['params'])


class ConvTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(side=8, k=3, stride=1, padding=None),
      dict(side=9, k=3, stride=2, padding=None),
      dict(side=8, k=1, stride=2, padding=None),
      dict(side=11, k=7, stride=2, padding=None),
      dict(side=8, k=3, stride=2, padding=((0, 1), (0, 1))),
      dict(side=6, k=3, stride=1, padding=((0, 0), (0, 0))),
  )
  def test_canonical_gradients_equal_xla(self, side, k, stride, padding):
    x = jax.random.normal(jax.random.key(1), (2, side, side - 1, 3))
    w = jax.random.normal(jax.random.key(2), (k, k, 3, 5))

    def grads(impl):
      def f(x, w):
        return jnp.sum(jnp.sin(conv2d(x, w, stride=stride, padding=padding, impl=impl)))
      return jax.grad(f, argnums=(0, 1))(x, w)

    for got, want in zip(grads('canonical'), grads('xla')):
      np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)

  def test_canonical_gradients_inside_cond(self):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.key(2), (3, 3, 3, 4))

    def f(impl, pred):
      def g(x, w):
        y = jax.lax.cond(pred, lambda: conv2d(x, w, stride=2, impl=impl),
                         lambda: jnp.zeros((2, 4, 4, 4)))
        return jnp.sum(y ** 2)
      return jax.jit(jax.grad(g, argnums=(0, 1)))(x, w)

    for got, want in zip(f('canonical', jnp.array(True)), f('xla', jnp.array(True))):
      np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)

  def test_bad_impl(self):
    with self.assertRaisesRegex(ValueError, "impl='fast'"):
      conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl='fast')


class MaskedResNetTest(parameterized.TestCase):

  @parameterized.product(train=[False, True], shortcut=['pad', 'projection'],
                         block=['basic', 'bottleneck'])
  def test_masked_equals_network_without_blocks(self, train, shortcut, block):
    stage_sizes = (3, 2)
    model = _tiny(stage_sizes, shortcut, block)
    x, variables = _init(model)
    keep = np.array([True, False, True, True, False])  # stage-first blocks kept
    kw = dict(train=train, mutable=['batch_stats']) if train else dict(train=False)
    got = model.apply(variables, x, keep_mask=jnp.asarray(keep), **kw)
    small_vars, small_sizes = _without_blocks(variables, stage_sizes, keep)
    small = _tiny(small_sizes, shortcut, block)
    want = small.apply(small_vars, x, **kw)
    if train:
      (got, got_stats), (want, want_stats) = got, want
      renamed, _ = _without_blocks(got_stats, stage_sizes, keep)
      chex.assert_trees_all_close(renamed['batch_stats'], want_stats['batch_stats'], atol=1e-5)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1]['pre_logits'], want[1]['pre_logits'], atol=1e-5)

  @parameterized.parameters('pad', 'projection')
  def test_dropping_a_downsampling_block_gives_its_shortcut(self, shortcut):
    # Stochastic depth drops stage-first blocks too: a dropped block is relu(shortcut(x)),
    # which equals a residual branch scaled by zero (eval mode).
    model = _tiny((2, 2), shortcut)
    x, variables = _init(model)
    keep = jnp.array([True, True, False, True])
    dropped = model.apply(variables, x, keep_mask=keep, train=False)[0]
    scaled = model.apply(variables, x, train=False,
                         residual_scale=jnp.array([1.0, 1.0, 0.0, 1.0]))[0]
    np.testing.assert_allclose(dropped, scaled, atol=1e-5)
    self.assertGreater(float(jnp.max(jnp.abs(
        dropped - model.apply(variables, x, train=False)[0]))), 1e-3)

  def test_pad_shortcut_downsampling_hand_values(self):
    # x[0, h, w, c] = 16h + 4w + c on a 4x4x2 map, to 4 channels at stride 2.
    x = (16 * jnp.arange(4)[:, None, None] + 4 * jnp.arange(4)[None, :, None]
         + jnp.arange(2)[None, None, :]).astype(jnp.float32)[None]
    sub = resnet._pad_shortcut(x, 2, 4, 'subsample')[0]
    # Every second pixel; one zero channel before and one after the two existing ones.
    np.testing.assert_array_equal(sub[..., 1], [[0, 8], [32, 40]])
    np.testing.assert_array_equal(sub[..., 2], [[1, 9], [33, 41]])
    np.testing.assert_array_equal(sub[..., 0], 0)
    np.testing.assert_array_equal(sub[..., 3], 0)
    pooled = resnet._pad_shortcut(x, 2, 4, 'avgpool')[0]
    # 2x2 means (ResidualDrop.lua); zero channels after the existing ones.
    np.testing.assert_array_equal(pooled[..., 0], [[10, 18], [42, 50]])
    np.testing.assert_array_equal(pooled[..., 1], [[11, 19], [43, 51]])
    np.testing.assert_array_equal(pooled[..., 2:], 0)
    # An odd side: the last row/column averages only the pixels there.
    odd = resnet._pad_shortcut(jnp.arange(9.0).reshape(1, 3, 3, 1), 2, 1, 'avgpool')[0, ..., 0]
    np.testing.assert_array_equal(odd, [[2.0, 3.5], [6.5, 8.0]])

  def test_avgpool_shortcut_in_a_network(self):
    # A dropped downsampling block outputs relu(avgpool shortcut); the field reaches it.
    model = _tiny((1, 1), 'pad', pad_downsample='avgpool')
    x, variables = _init(model)
    keep = jnp.array([True, False])
    got = model.apply(variables, x, keep_mask=keep, train=False)[1]['stage2']
    stage1 = model.apply(variables, x, train=False)[1]['stage1']
    np.testing.assert_allclose(
        got, jax.nn.relu(resnet._pad_shortcut(stage1, 2, 8, 'avgpool')), atol=1e-6)
    other = _tiny((1, 1), 'pad').apply(variables, x, keep_mask=keep, train=False)[1]['stage2']
    self.assertGreater(float(jnp.max(jnp.abs(got - other))), 1e-3)
    with self.assertRaisesRegex(ValueError, "pad_downsample='max' is not one of"):
      _tiny(pad_downsample='max').init(jax.random.key(0), x)

  @parameterized.parameters(False, True)
  def test_all_true_mask_equals_plain_network(self, train):
    model = _tiny()
    x, variables = _init(model)
    kw = dict(train=train, mutable=['batch_stats']) if train else dict(train=False)
    masked = model.apply(variables, x, keep_mask=jnp.ones(5, bool), **kw)
    plain = model.apply(variables, x, **kw)
    chex.assert_trees_all_close(masked, plain, atol=1e-5)

  def test_dropped_block_batch_stats_unchanged(self):
    model = _tiny()
    x, variables = _init(model)
    keep = jnp.array([True, False, True, True, False])
    _, updates = model.apply(variables, x, keep_mask=keep, train=True, mutable=['batch_stats'])
    old, new = variables['batch_stats'], updates['batch_stats']
    for name, kept in (('stage1_block1', True), ('stage1_block2', False),
                       ('stage1_block3', True), ('stage2_block2', False)):
      changed = any(not np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(old[name]), jax.tree.leaves(new[name])))
      self.assertEqual(changed, kept, name)

  def test_dropped_block_gets_no_gradient(self):
    model = _tiny()
    x, variables = _init(model)
    keep = jnp.array([True, False, True, True, True])

    def loss(params):
      logits, _ = model.apply({**variables, 'params': params}, x, keep_mask=keep, train=True,
                              mutable=['batch_stats'])[0]
      return jnp.sum(logits ** 2)

    grads = jax.grad(loss)(variables['params'])
    self.assertEqual(max(float(jnp.max(jnp.abs(g)))
                         for g in jax.tree.leaves(grads['stage1_block2'])), 0.0)
    self.assertGreater(max(float(jnp.max(jnp.abs(g)))
                           for g in jax.tree.leaves(grads['stage1_block3'])), 0.0)

  def test_one_compilation_serves_every_mask(self):
    model = _tiny()
    x, variables = _init(model)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(variables, keep):
      def loss(params):
        (logits, _), _ = model.apply({**variables, 'params': params}, x, keep_mask=keep,
                                     train=True, mutable=['batch_stats'])
        return jnp.mean(logits ** 2)
      return jax.grad(loss)(variables['params'])

    chex.clear_trace_counter()
    for i in range(4):
      keep = jax.random.bernoulli(jax.random.key(i), 0.5, (5,))
      jax.block_until_ready(step(variables, keep))

  @parameterized.parameters('canonical', 'xla')
  def test_masked_gradients_equal_network_without_blocks(self, impl):
    # Each conv impl inside the per-block conds against a different program: the network
    # built without the dropped blocks (no cond, no mask, XLA's convolution). Kept blocks get
    # the small network's gradients, dropped ones exactly zero.
    stage_sizes, keep = (3, 2), (True, False, True, True, False)
    x, variables = _init(_tiny(stage_sizes, conv_impl='xla'))
    grads, _ = _masked_grads(_tiny(stage_sizes, conv_impl=impl), variables, x, keep)
    small_vars, small_sizes = _without_blocks(variables, stage_sizes, keep)
    want, _ = _masked_grads(_tiny(small_sizes, conv_impl='xla'), small_vars, x, keep=None)
    renamed, _ = _without_blocks({'params': grads}, stage_sizes, keep)
    chex.assert_trees_all_close(renamed['params'], want, atol=1e-6, rtol=1e-5)
    for name in ('stage1_block2', 'stage2_block2'):
      self.assertEqual(max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[name])),
                       0.0, name)

  @parameterized.parameters('conv_outputs', 'nothing')
  def test_masked_saves_do_not_change_gradients(self, saves):
    x, variables = _init(_tiny())
    chex.assert_trees_all_close(_masked_grads(_tiny(masked_saves=saves), variables, x),
                                _masked_grads(_tiny(masked_saves='all'), variables, x),
                                atol=1e-6, rtol=1e-5)

  def test_mask_shape_is_checked(self):
    model = _tiny()
    x, variables = _init(model)
    with self.assertRaisesRegex(ValueError, r'\(5,\)'):
      model.apply(variables, x, keep_mask=jnp.ones(4, bool))


class BlockBoundaryTest(parameterized.TestCase):

  @parameterized.parameters('projection', 'pad')
  def test_unmasked_forward_same_values_with_each_boundary(self, shortcut):
    # 'cond' (CPU's 'auto') compiles every block of an unmasked forward as its own
    # computation; eval outputs, gradients and BatchNorm updates stay those of the flat net.
    x, variables = _init(_tiny(shortcut=shortcut))
    results = {}
    for mode in (False, True, 'cond'):
      model = _tiny(shortcut=shortcut, block_barriers=mode)
      hlo = jax.jit(lambda v, x, model=model: model.apply(v, x)[0]).lower(
          variables, x).compile().as_text()
      self.assertEqual(hlo.count(' conditional('), 5 if mode == 'cond' else 0, mode)
      results[mode] = (model.apply(variables, x)[0],
                       _masked_grads(model, variables, x, keep=None))
    for mode in (True, 'cond'):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                   results[mode], results[False])

  def test_auto_is_cond_on_cpu(self):
    impl, boundary = _tiny()._checked_settings(None, None)
    self.assertEqual((impl, boundary), ('canonical', 'cond'))
    self.assertEqual(_tiny(block_barriers=False)._checked_settings(None, None),
                     ('xla', 'none'))
    # The names config files and flags use for False and True.
    self.assertEqual(_tiny(block_barriers='none')._checked_settings(None, None),
                     ('xla', 'none'))
    self.assertEqual(_tiny(block_barriers='barrier')._checked_settings(None, None),
                     ('xla', 'barrier'))
    with self.assertRaisesRegex(ValueError, "block_barriers='conds'"):
      _tiny(block_barriers='conds')


class NNXBridgeTest(absltest.TestCase):

  def test_nnx_user_can_wrap_the_linen_model(self):
    from flax import nnx
    from flax.nnx import bridge
    model = _tiny()
    x, _ = _init(model)
    wrapped = bridge.ToNNX(model, rngs=nnx.Rngs(0))
    bridge.lazy_init(wrapped, x, train=False)
    keep = jnp.array([True, False, True, True, False])
    logits, _ = wrapped(x, keep_mask=keep, train=False)
    variables = {'params': nnx.to_pure_dict(nnx.state(wrapped, nnx.Param)),
                 'batch_stats': nnx.to_pure_dict(nnx.state(wrapped, nnx.BatchStat))}
    want, _ = model.apply(variables, x, keep_mask=keep, train=False)
    np.testing.assert_allclose(logits, want, atol=1e-6)


class BuildTest(parameterized.TestCase):

  @parameterized.parameters(
      ('resnet20', 9, (4, 4), 64), ('resnet56', 27, (4, 4), 64), ('resnet110', 54, (4, 4), 64),
      ('resnet18', 8, (2, 2), 512), ('resnet50', 16, (2, 2), 2048))
  def test_architectures(self, arch, num_blocks, final_hw, final_channels):
    stem = None if arch in ('resnet20', 'resnet56', 'resnet110') else 'cifar'
    model = models.build_model(arch, 10, stem=stem)
    self.assertEqual(model.num_blocks, num_blocks)
    x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    (logits, features), _ = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x), x)
    self.assertEqual(logits.shape, (2, 10))
    last = features[f'stage{len(model.stage_sizes)}']
    self.assertEqual(last.shape[1:], final_hw + (final_channels,))

  def test_imagenet_stem(self):
    model = models.build_model('resnet18', 7)
    (logits, features), _ = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x),
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    self.assertEqual(features['stem'].shape, (1, 16, 16, 64))
    self.assertEqual(logits.shape, (1, 7))

  def test_width_multiplier(self):
    model = models.build_model('resnet20', 10, width_multiplier=2.0)
    self.assertEqual(model.stage_widths, (32, 64, 128))

  @parameterized.parameters(
      (dict(arch='resnet21'), 'resnet21'), (dict(arch='resnet20', stem='imagenet'), 'stem'),
      (dict(arch='resnet18', stem='tiny'), r"stem='tiny' is not one of \('cifar', 'imagenet'\)"),
      (dict(arch='resnet20', shortcut='bogus'), r"shortcut='bogus' is not one of"),
      (dict(arch='resnet20', width_multiplier=0), r'width_multiplier=0: must be a number > 0'),
      (dict(arch='resnet50', width_multiplier=-1.0), r'width_multiplier=-1.0'),
      (dict(arch='resnet20', num_classes=0), r'num_classes=0: must be an integer >= 1'),
      (dict(arch='resnet20', bn_momentum=1.0), r'bn_momentum=1.0: must be in \[0, 1\)'),
      (dict(arch='resnet20', masked_saves='some'), r"masked_saves='some' is not one of"),
      (dict(arch='resnet20', conv_impl='cudnn'), r"conv_impl='cudnn' is not one of"))
  def test_bad_config(self, kw, message):
    kw = dict(dict(num_classes=10), **kw)
    with self.assertRaisesRegex(ValueError, message):  # where given, not at the first call
      models.build_model(**kw)

  def test_bad_fields_of_a_resnet_built_directly(self):
    with self.assertRaisesRegex(ValueError, r'stage_widths=\(16,\) needs one width per stage'):
      ResNet(stage_sizes=(1, 1), stage_widths=(16,), num_classes=3)
    with self.assertRaisesRegex(ValueError, r'stage_sizes=\(1, 0\): must be integers >= 1'):
      ResNet(stage_sizes=(1, 0), stage_widths=(4, 8), num_classes=3)


if __name__ == '__main__':
  absltest.main()
