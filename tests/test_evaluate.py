"""Cost accounting and BatchNorm recalibration."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from gkt_jax import evaluate
from gkt_jax.models import ResNet


class CostTest(absltest.TestCase):

  def test_block_flops_hand_count(self):
    # Stem 3->4 3x3 at 8x8; stage1: 2 basic blocks 4->4 at 8x8; stage2: 2 blocks, the first
    # 4->8 stride 2 (pad shortcut) at 4x4; head 8->5.
    model = ResNet(stage_sizes=(2, 2), stage_widths=(4, 8), num_classes=5, stem_width=4,
                   shortcut='pad')
    fixed, per_block = evaluate.block_flops(model, (8, 8, 3))
    conv = lambda hw, k, cin, cout: 2 * hw * hw * k * k * cin * cout
    self.assertEqual(fixed, conv(8, 3, 3, 4) + 2 * 8 * 5)
    np.testing.assert_array_equal(per_block, [
        2 * conv(8, 3, 4, 4), 2 * conv(8, 3, 4, 4),
        conv(4, 3, 4, 8) + conv(4, 3, 8, 8), 2 * conv(4, 3, 8, 8)])
    masks = np.array([[1, 1, 1, 1], [1, 0, 1, 0]], bool)
    self.assertEqual(evaluate.masks_flops(fixed, per_block, masks),
                     2 * fixed + per_block.sum() + per_block[0] + per_block[2])

  def test_projection_shortcut_counts_as_fixed(self):
    model = ResNet(stage_sizes=(1, 1), stage_widths=(4, 8), num_classes=5, stem_width=4,
                   shortcut='projection')
    fixed, _ = evaluate.block_flops(model, (8, 8, 3))
    self.assertEqual(fixed, 2 * 64 * 9 * 3 * 4 + 2 * 16 * 4 * 8 + 2 * 8 * 5)


class RecalibrationTest(absltest.TestCase):

  def test_one_batch_gives_its_batch_statistics(self):
    kw = dict(stage_sizes=(2, 1), stage_widths=(4, 8), num_classes=5, stem_width=4)
    model = ResNet(**kw)
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    variables = model.init(jax.random.key(1), images, train=False)
    variables = {**variables, 'batch_stats': jax.tree.map(lambda a: a + 3.0,
                                                          variables['batch_stats'])}
    got = evaluate.recalibrate_batch_stats(model, variables, [images], model.bn_momentum)
    # A network whose running statistics are replaced outright (momentum 0).
    _, want = ResNet(**kw, bn_momentum=0.0).apply(variables, images, train=True,
                                                  mutable=['batch_stats'])
    chex.assert_trees_all_close(got['batch_stats'], want['batch_stats'], atol=1e-4)

  def test_two_batches_average(self):
    kw = dict(stage_sizes=(1,), stage_widths=(4,), num_classes=3, stem_width=4)
    model = ResNet(**kw)
    a = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    b = 2.0 + jax.random.normal(jax.random.key(1), (8, 4, 4, 3))
    variables = model.init(jax.random.key(1), a, train=False)
    both = evaluate.recalibrate_batch_stats(model, variables, [a, b], model.bn_momentum)
    one = [evaluate.recalibrate_batch_stats(model, variables, [x], model.bn_momentum)
           for x in (a, b)]
    want = jax.tree.map(lambda x, y: (x + y) / 2, one[0]['batch_stats'], one[1]['batch_stats'])
    chex.assert_trees_all_close(both['batch_stats'], want, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
