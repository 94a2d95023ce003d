"""Tests for gkt_jax.groups against hand-computed group knowledge."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import groups

# Three subnets' logits, B = 2 examples, C = 2 classes.
LEVEL_LOGITS = np.array([
    [[1.0, 2.0], [0.0, -4.0]],
    [[3.0, 0.0], [2.0, 4.0]],
    [[5.0, 4.0], [-2.0, 6.0]],
], np.float32)

# By hand. ema, momentum 0.5: a1 = (z0 + z1) / 2, a2 = a1 / 2 + z2 / 2.
EMA_HALF = np.array([
    [[1.0, 2.0], [0.0, -4.0]],
    [[2.0, 1.0], [1.0, 0.0]],
    [[3.5, 2.5], [-0.5, 3.0]],
], np.float32)
# ema, momentum 0.25: a1 = z0 / 4 + 3 z1 / 4, a2 = a1 / 4 + 3 z2 / 4.
EMA_QUARTER = np.array([
    [[1.0, 2.0], [0.0, -4.0]],
    [[2.5, 0.5], [1.5, 2.0]],
    [[4.375, 3.125], [-1.125, 5.0]],
], np.float32)
# mean: a1 = (z0 + z1) / 2, a2 = (z0 + z1 + z2) / 3.
MEAN = np.array([
    [[1.0, 2.0], [0.0, -4.0]],
    [[2.0, 1.0], [1.0, 0.0]],
    [[3.0, 2.0], [0.0, 2.0]],
], np.float32)


class GroupSoftTargetsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('ema_half', 'ema', 0.5, EMA_HALF),
      ('ema_quarter', 'ema', 0.25, EMA_QUARTER),
      ('mean', 'mean', 0.5, MEAN),
      ('mean_ignores_momentum', 'mean', 0.9, MEAN),
  )
  def test_hand_values(self, aggregate, momentum, expected):
    targets_fn = self.variant(groups.group_soft_targets, static_argnames='aggregate')
    targets = targets_fn(jnp.asarray(LEVEL_LOGITS), aggregate=aggregate, momentum=momentum)
    self.assertEqual(targets.shape, (3, 2, 2))
    self.assertEqual(targets.dtype, jnp.float32)
    np.testing.assert_allclose(targets, expected, atol=1e-6)

  def test_single_subnet(self):
    np.testing.assert_allclose(groups.group_soft_targets(LEVEL_LOGITS[:1]), LEVEL_LOGITS[:1],
                               atol=1e-6)

  def test_bad_aggregate(self):
    with self.assertRaisesRegex(ValueError, r"aggregate='max'.*'ema', 'mean'"):
      groups.group_soft_targets(LEVEL_LOGITS, aggregate='max')

  def test_bad_momentum(self):
    with self.assertRaisesRegex(ValueError, r'momentum=1.5.*\[0, 1\]'):
      groups.group_soft_targets(LEVEL_LOGITS, momentum=1.5)


class UpdateGroupKnowledgeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      # knowledge [2, 4], logits [6, 0]
      ('first_ema', 'ema', 0, [6.0, 0.0]),
      ('first_mean', 'mean', 0, [6.0, 0.0]),
      ('ema', 'ema', 1, [0.25 * 2 + 0.75 * 6, 0.25 * 4]),
      ('ema_later', 'ema', 5, [0.25 * 2 + 0.75 * 6, 0.25 * 4]),
      ('mean_second', 'mean', 1, [4.0, 2.0]),
      ('mean_fourth', 'mean', 3, [3.0, 3.0]),
  )
  def test_hand_values(self, aggregate, num_seen, expected):
    update = self.variant(groups.update_group_knowledge, static_argnames='aggregate')
    out = update(jnp.array([[2.0, 4.0]]), jnp.array([[6.0, 0.0]]), jnp.asarray(num_seen),
                 aggregate=aggregate, momentum=0.25)
    np.testing.assert_allclose(out, [expected], atol=1e-6)

  def test_first_update_ignores_knowledge(self):
    out = groups.update_group_knowledge(jnp.full((1, 2), 1e30), jnp.array([[6.0, 0.0]]), 0,
                                        aggregate='mean')
    np.testing.assert_allclose(out, [[6.0, 0.0]], atol=1e-6)

  @parameterized.parameters('ema', 'mean')
  def test_scan_with_traced_count_matches_group_soft_targets(self, aggregate):
    """The trainer's form: a running buffer updated inside lax.scan with a traced count."""

    @jax.jit
    def run(level_logits):
      def step(knowledge, inputs):
        num_seen, logits = inputs
        knowledge = groups.update_group_knowledge(knowledge, logits, num_seen,
                                                  aggregate=aggregate, momentum=0.25)
        return knowledge, knowledge

      return jax.lax.scan(step, jnp.zeros_like(level_logits[0]),
                          (jnp.arange(level_logits.shape[0]), level_logits))[1]

    level_logits = jax.random.normal(jax.random.key(0), (5, 4, 3))
    expected = [level_logits[0]]
    for l in range(1, 5):
      if aggregate == 'ema':
        expected.append(0.25 * expected[-1] + 0.75 * level_logits[l])
      else:
        expected.append(jnp.mean(level_logits[:l + 1], axis=0))
    np.testing.assert_allclose(run(level_logits), np.stack(expected), atol=1e-5)
    np.testing.assert_allclose(
        groups.group_soft_targets(level_logits, aggregate, 0.25), np.stack(expected),
        atol=1e-5)

  def test_bad_aggregate(self):
    with self.assertRaisesRegex(ValueError, r"aggregate='median'.*'ema', 'mean'"):
      groups.update_group_knowledge(jnp.zeros((1, 2)), jnp.zeros((1, 2)), 1,
                                    aggregate='median')


if __name__ == '__main__':
  absltest.main()
