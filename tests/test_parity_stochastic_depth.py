"""Stochastic depth against the rules of the authors' Lua Torch code, values computed by hand.

The reference, github.com/yueatsprograms/Stochastic_Depth (main.lua, ResidualDrop.lua at
commit 286bb50aaaa6f1254585e31e2ddca0cc3dcbb25b), needs Torch7, cuDNN and a GPU and cannot run
here; each expected value below is derived in a comment from the Lua line it follows. The
networks are built so that every value is exact: all convolution kernels are 0, so a residual
branch outputs its last BatchNorm's bias (conv 0 -> BN: (0 - mean) / sqrt(var + eps) * scale
+ bias, with mean 0 in eval mode and, in train mode, batch mean 0 and batch variance 0).
"""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gkt_jax import masks, methods
from gkt_jax.models import ResNet


def _variables(model, side):
  """The model's variables with every weight 0 but BatchNorm's scales and running variances
  (1), from its shapes (no initialiser runs)."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32))
  return jax.tree.map_with_path(
      lambda path, x: (jnp.ones if path[-1].key in ('scale', 'var') else jnp.zeros)(
          x.shape, x.dtype), dict(shapes))


def _set(tree, path, value):
  *parents, leaf = path.split('/')
  node = tree
  for part in parents:
    node = node[part]
  node[leaf] = jnp.asarray(value, node[leaf].dtype)


class SurvivalTest(absltest.TestCase):

  def test_linear_rule(self):
    # main.lua:103 (lin_decay): model:get(block).deathRate = i / #addtables * opt.deathRate,
    # where addtables holds every nn.ResidualDrop (main.lua:93-96: the first, downsampling
    # block of groups 2 and 3 too, main.lua:70,73) and opt.deathRate = 1 - p_L (main.lua:20).
    # p_L = 0.5, L = 4: deathRate = 1/4 * 0.5, 2/4 * 0.5, 3/4 * 0.5, 4/4 * 0.5
    # = 0.125, 0.25, 0.375, 0.5, so the survival 1 - deathRate is 0.875, 0.75, 0.625, 0.5.
    np.testing.assert_allclose(masks.stochastic_depth_survival(4, 0.5),
                               [0.875, 0.75, 0.625, 0.5], rtol=1e-7)
    # The paper's CIFAR net, N = 18 (main.lua:17; 3 groups of 18: L = 54): block 1 survives
    # with 1 - 1/54 * 0.5 = 107/108, block 27 with 1 - 27/54 * 0.5 = 0.75, block 54 with 0.5.
    p = np.asarray(masks.stochastic_depth_survival(54, 0.5))
    np.testing.assert_allclose(p[[0, 26, 53]], [107 / 108, 0.75, 0.5], rtol=1e-7)
    # The expected share of blocks run is the mean: 1 - 0.5 * (1 + ... + 54) / 54^2
    # = 1 - 0.5 * 55 / 108 = 161/216, not the 0.75 of the L -> infinity limit.
    self.assertAlmostEqual(float(np.mean(p)), 161 / 216, places=6)

  def test_uniform_rule_and_constant_depth(self):
    # main.lua:101 (uniform): model:get(block).deathRate = opt.deathRate for every block:
    # deathRate 0.5 gives survival 1 - 0.5 = 0.5 everywhere.
    np.testing.assert_allclose(masks.stochastic_depth_survival(5, 0.5, 'uniform'), [0.5] * 5)
    # main.lua:20 "0 is constant depth": deathRate 0 makes every survival 1 - 0 = 1.
    np.testing.assert_array_equal(masks.stochastic_depth_survival(6, 1.0), np.ones(6))


class GateTest(absltest.TestCase):

  def test_one_gate_per_block_per_minibatch(self):
    # main.lua:176-182: for every minibatch (`for i=1,#batches`), once per block,
    # `if torch.rand(1)[1] < deathRate then gate = false`: ONE uniform draw per block shared
    # by the whole minibatch, so block i runs with probability 1 - deathRate_i = p_i.
    survival = masks.stochastic_depth_survival(4, 0.5)
    draw = jax.jit(jax.vmap(lambda k: masks.sample_stochastic_depth(k, survival)))
    keep = np.asarray(draw(jax.random.split(jax.random.key(0), 20000)))
    self.assertEqual(keep.shape, (20000, 4))  # a gate per block: bool[L], no batch axis
    # Expected frequencies 0.875, 0.75, 0.625, 0.5 (test_linear_rule), each within 5 binomial
    # standard deviations sqrt(p (1 - p) / 20000) <= 0.0036.
    for i, p in enumerate([0.875, 0.75, 0.625, 0.5]):
      self.assertAlmostEqual(keep[:, i].mean(), p, delta=5 * np.sqrt(p * (1 - p) / 20000))
    # Independent draws: blocks 1 and 4 are both kept with 0.875 * 0.5 = 0.4375.
    self.assertAlmostEqual(np.mean(keep[:, 0] & keep[:, 3]), 0.4375, delta=0.018)
    # deathRate 0 (main.lua:20): `rand < 0` never holds, every gate stays open.
    always = jax.vmap(lambda k: masks.sample_stochastic_depth(k, jnp.ones(4)))(
        jax.random.split(jax.random.key(2), 1000))
    self.assertTrue(bool(jnp.all(always)))


class BlockRuleTest(absltest.TestCase):

  def _network(self, **fields):
    """Two stages of two blocks (L = 4), widths 2 and 4, ResidualDrop's shortcut."""
    model = ResNet(stage_sizes=(2, 2), stage_widths=(2, 4), num_classes=4, stem_width=2,
                   shortcut='pad', pad_downsample='avgpool', **fields)
    variables = _variables(model, 4)
    params, stats = variables['params'], variables['batch_stats']  # running means 0, vars 1
    _set(params, 'head/kernel', np.eye(4))
    _set(params, 'stem_bn/bias', [1.0, 2.0])
    for block, bias in (('stage1_block1', [0.8, -1.6]), ('stage1_block2', [-4.0, 0.4]),
                        ('stage2_block1', [1.6, 0.8, 0.8, -0.8]),
                        ('stage2_block2', [2.0, -2.0, 1.0, 4.0])):
      _set(params, f'{block}/branch/bn2/bias', bias)
    return model, {'params': params, 'batch_stats': stats}

  def test_test_time_scaling(self):
    # ResidualDrop.lua:44-55 (updateOutput), test mode:
    #   output = skip(input) + net(input) * (1 - deathRate), then ReLU (ResidualDrop.lua:76,
    #   addResidualDrop), with 1 - deathRate = p_i = 0.875, 0.75, 0.625, 0.5 (main.lua:103).
    # Stem: zero conv, BN bias (1, 2), ReLU -> the constant map (1, 2).
    # Block 1 (identity skip), branch = its bn2 bias (0.8, -1.6):
    #   relu((1, 2) + 0.875 * (0.8, -1.6)) = relu(1.7, 0.6) = (1.7, 0.6).
    # Block 2, branch (-4, 0.4): relu((1.7, 0.6) + 0.75 * (-4, 0.4)) = relu(-1.3, 0.9) = (0, 0.9).
    # Block 3, stride 2, 2 -> 4 channels: skip = SpatialAveragePooling(2, 2, 2, 2) of a
    #   constant map (the same constant) with 2 zero channels appended (nn.Padding(1, 2, 3),
    #   ResidualDrop.lua:28-36): (0, 0.9, 0, 0); branch (1.6, 0.8, 0.8, -0.8):
    #   relu((0, 0.9, 0, 0) + 0.625 * (1.6, 0.8, 0.8, -0.8)) = relu(1, 1.4, 0.5, -0.5)
    #   = (1, 1.4, 0.5, 0).
    # Block 4, branch (2, -2, 1, 4): relu((1, 1.4, 0.5, 0) + 0.5 * (2, -2, 1, 4))
    #   = (2, 0.4, 1, 2); average pooling keeps the constant, the identity head passes it on.
    model, variables = self._network()
    method = methods.get_method(ml_collections.ConfigDict(
        dict(name='stochastic_depth', final_survival=0.5, rule='linear')), model)
    images = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    logits = jax.jit(method.predict)(variables, images)
    np.testing.assert_allclose(logits, [[2.0, 0.4, 1.0, 2.0]] * 2, rtol=1e-6, atol=1e-6)

  def test_training_gates(self):
    # ResidualDrop.lua:44-55, train mode: output = skip(input), plus net(input) only `if
    # self.gate` (no scaling); main.lua:181 closed gates 2 and 4 here.
    # Stem (train-mode BN of a zero conv: batch mean 0, variance 0): relu(1, 2) = (1, 2).
    # Block 1 open: relu((1, 2) + (0.8, -1.6)) = (1.8, 0.4).
    # Block 2 closed: relu(skip) = (1.8, 0.4) (the ReLU after the block, ResidualDrop.lua:76).
    # Block 3 open: relu((1.8, 0.4, 0, 0) + (1.6, 0.8, 0.8, -0.8)) = (3.4, 1.2, 0.8, 0).
    # Block 4 closed: (3.4, 1.2, 0.8, 0).
    model, variables = self._network()
    keep = jnp.asarray([True, False, True, False])
    images = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))

    def loss(params):
      (logits, _), updates = model.apply({'params': params,
                                          'batch_stats': variables['batch_stats']},
                                         images, keep_mask=keep, train=True,
                                         mutable=['batch_stats'])
      return jnp.sum(logits * jnp.arange(1.0, 5.0)), (logits, updates['batch_stats'])

    grads, (logits, stats) = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
    np.testing.assert_allclose(logits, [[3.4, 1.2, 0.8, 0.0]] * 2, rtol=1e-6, atol=1e-6)
    # ResidualDrop.lua:57-71: updateGradInput and accGradParameters reach self.net only if
    # self.gate: a closed block's parameters get exactly no gradient...
    for block in ('stage1_block2', 'stage2_block2'):
      for g in jax.tree.leaves(grads[block]):
        np.testing.assert_array_equal(g, 0.0)
    # ...while an open one's do (block 1's output (1.8, 0.4) passes its ReLU).
    self.assertGreater(float(jnp.abs(grads['stage1_block1']['branch']['bn2']['bias']).sum()),
                       0.0)
    # ...and a closed block's BatchNorm never runs (net:forward is not called), so its
    # running statistics stay as they were: variance 1 here, while an open block's moves
    # towards its batch variance 0 (0.9 * 1 + 0.1 * 0 = 0.9).
    np.testing.assert_array_equal(stats['stage1_block2']['branch']['bn1']['var'], 1.0)
    np.testing.assert_allclose(stats['stage1_block1']['branch']['bn1']['var'], 0.9,
                               rtol=1e-6)

  def test_average_pool_shortcut(self):
    # ResidualDrop.lua:28-36: the skip of a stride-2 block is nn.Identity, then
    # nn.SpatialAveragePooling(2, 2, 2, 2), then nn.Padding(1, nOut - nIn, 3): 2x2 means, and
    # nOut - nIn zero channels appended AFTER the input's (a positive pad on dim 1).
    # Input channel 0 = 0..15 row by row on a 4x4 map, passed through by a stem that copies
    # it (its BN is the identity: mean 0, variance 1 - 1e-5, scale 1); block 1 closed:
    # relu(x) = x; block 2 (1 -> 3 channels) closed: relu(skip(x)):
    #   channel 0: (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, (8+9+12+13)/4 = 10.5,
    #   (10+11+14+15)/4 = 12.5; channels 1 and 2: 0.
    model = ResNet(stage_sizes=(1, 1), stage_widths=(1, 3), num_classes=1, stem_width=1,
                   shortcut='pad', pad_downsample='avgpool')
    images = np.zeros((1, 4, 4, 3), np.float32)
    images[0, :, :, 0] = np.arange(16).reshape(4, 4)
    variables = _variables(model, 4)
    params, stats = variables['params'], variables['batch_stats']
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[1, 1, 0, 0] = 1.0  # the centre tap of input channel 0
    _set(params, 'stem_conv/kernel', kernel)
    _set(stats, 'stem_bn/var', [1.0 - 1e-5])
    closed = jnp.asarray([False, False])
    stage2 = jax.jit(lambda m: m.apply({'params': params, 'batch_stats': stats}, images,
                                       keep_mask=closed, train=False)[1]['stage2'],
                     static_argnums=0)
    want = np.zeros((1, 2, 2, 3))
    want[0, :, :, 0] = [[2.5, 4.5], [10.5, 12.5]]
    np.testing.assert_allclose(stage2(model), want, rtol=1e-5, atol=1e-5)
    # (Option A, 'subsample', would give the pixels 0, 2, 8, 10 and a zero channel on each
    # side: the rule is really the Lua one.)
    subsample = stage2(model.clone(pad_downsample='subsample'))
    np.testing.assert_allclose(subsample[0, :, :, 1], [[0.0, 2.0], [8.0, 10.0]], atol=1e-5)


if __name__ == '__main__':
  absltest.main()
