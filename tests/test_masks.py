"""Tests for gkt_jax.masks: hand-computed masks, jit agreement and sampler statistics, and
the sampling rules GKT and stimulative training build from them (`sample_masks`).

Statistical tests draw NUM_DRAWS masks in one jitted vmap and accept an observed frequency
within SIGMAS binomial standard deviations of the exact probability (exact equality where
the probability is 0 or 1).
"""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gkt_jax import masks, methods, models

NUM_DRAWS = 20_000
SIGMAS = 5.0


def _keys(seed: int, num: int = NUM_DRAWS) -> jax.Array:
  return jax.random.split(jax.random.key(seed), num)


@functools.partial(jax.jit, static_argnames=('stage_sizes', 'sampler', 'kw'))
def _draw_subnets(keys, parent, *, stage_sizes, sampler, kw=()):
  """bool[N, L]: one sample_subnet draw per key."""
  return jax.vmap(lambda k: masks.sample_subnet(
      k, stage_sizes, sampler=sampler, parent=parent, **dict(kw)))(keys)


@functools.partial(jax.jit, static_argnames=('stage_sizes', 'num_subnets', 'sampler', 'kw'))
def _draw_chains(keys, *, stage_sizes, num_subnets, sampler, kw=()):
  """bool[N, K, L]: one nested chain per key."""
  return jax.vmap(lambda k: masks.sample_nested_subnets(
      k, stage_sizes, num_subnets, sampler=sampler, **dict(kw)))(keys)


def _method_masks(seed: int, **fields) -> np.ndarray:
  """bool[NUM_DRAWS, K, 9]: one `sample_masks` draw per key of the method `fields` describe,
  on a ResNet-20 (stage sizes (3, 3, 3))."""
  method = methods.get_method(ml_collections.ConfigDict(fields),
                              models.build_model('resnet20', 10))
  return np.asarray(jax.jit(jax.vmap(method.sample_masks))(_keys(seed)))


class _StatsTestCase(parameterized.TestCase):

  def assert_frequency(self, observed, prob, num, msg=''):
    """|observed - prob| <= SIGMAS binomial std of a frequency over num trials."""
    tol = SIGMAS * math.sqrt(prob * (1.0 - prob) / num)
    self.assertLessEqual(abs(float(observed) - prob), tol,
                         f'{msg}: frequency {float(observed):.4f}, expected {prob:.4f} '
                         f'+- {tol:.4f}')

  def assert_same_frequency(self, first, second, num, msg=''):
    """Two frequencies over num trials each agree within SIGMAS std of their difference."""
    prob = (float(first) + float(second)) / 2
    tol = SIGMAS * math.sqrt(2 * prob * (1.0 - prob) / num)
    self.assertLessEqual(abs(float(first) - float(second)), tol,
                         f'{msg}: frequencies {float(first):.4f} and {float(second):.4f} '
                         f'+- {tol:.4f}')


class StochasticDepthSurvivalTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('linear_half', 0.5, 'linear', [0.875, 0.75, 0.625, 0.5]),
      ('linear_0.2', 0.2, 'linear', [0.8, 0.6, 0.4, 0.2]),
      ('linear_one', 1.0, 'linear', [1.0, 1.0, 1.0, 1.0]),
      ('uniform', 0.5, 'uniform', [0.5, 0.5, 0.5, 0.5]),
      ('uniform_0.3', 0.3, 'uniform', [0.3, 0.3, 0.3, 0.3]),
  )
  def test_hand_values(self, final_survival, rule, expected):
    survival_fn = self.variant(masks.stochastic_depth_survival, static_argnames=('num_blocks',
                                                                                 'rule'))
    survival = survival_fn(num_blocks=4, final_survival=final_survival, rule=rule)
    self.assertEqual(survival.dtype, jnp.float32)
    np.testing.assert_allclose(survival, expected, atol=1e-6)

  def test_bad_rule(self):
    with self.assertRaisesRegex(ValueError, r"'exponential'.*'linear', 'uniform'"):
      masks.stochastic_depth_survival(4, rule='exponential')

  @parameterized.parameters(1.5, -0.1)
  def test_bad_final_survival(self, final_survival):
    with self.assertRaisesRegex(ValueError, rf'final_survival={final_survival}.*\[0, 1\]'):
      masks.stochastic_depth_survival(4, final_survival=final_survival)


class SampleStochasticDepthTest(_StatsTestCase, chex.TestCase):

  def test_keep_rates_and_independence(self):
    survival = masks.stochastic_depth_survival(4, 0.5)
    keep = np.asarray(jax.jit(jax.vmap(masks.sample_stochastic_depth, in_axes=(0, None)))(
        _keys(0), survival))
    self.assertEqual(keep.shape, (NUM_DRAWS, 4))
    self.assertEqual(keep.dtype, np.bool_)
    for i, p in enumerate([0.875, 0.75, 0.625, 0.5]):
      self.assert_frequency(keep[:, i].mean(), p, NUM_DRAWS, f'block {i}')
    # Independent gates: P(block 0 and block 3 kept) = p_0 * p_3.
    self.assert_frequency((keep[:, 0] & keep[:, 3]).mean(), 0.875 * 0.5, NUM_DRAWS, 'joint')

  @chex.variants(with_jit=True, without_jit=True)
  def test_certain_gates(self):
    keep = self.variant(masks.sample_stochastic_depth)(jax.random.key(3),
                                                       jnp.array([0.0, 1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(keep, [False, True, True, False])


class SampleDropPathTest(_StatsTestCase, chex.TestCase):

  def test_each_example_draws_its_own_bits(self):
    survival = masks.stochastic_depth_survival(4, 0.5)
    keep = np.asarray(jax.jit(jax.vmap(masks.sample_drop_path, in_axes=(0, None, None)),
                              static_argnums=2)(_keys(0, NUM_DRAWS // 4), survival, 4))
    self.assertEqual(keep.shape, (NUM_DRAWS // 4, 4, 4))
    self.assertEqual(keep.dtype, np.bool_)
    num = keep.shape[0] * keep.shape[1]
    for i, p in enumerate([0.875, 0.75, 0.625, 0.5]):
      self.assert_frequency(keep[:, :, i].mean(), p, num, f'block {i}')
    # Examples 0 and 1 of one draw are independent: P(both keep block 3) = 0.5 * 0.5, where
    # one bit per batch would give 0.5.
    self.assert_frequency((keep[:, 0, 3] & keep[:, 1, 3]).mean(), 0.25, keep.shape[0], 'pair')
    # Blocks of one example are independent: P(block 0 and block 3 kept) = p_0 * p_3.
    self.assert_frequency((keep[:, :, 0] & keep[:, :, 3]).mean(), 0.875 * 0.5, num, 'joint')

  def test_examples_of_one_draw_differ(self):
    keep = np.asarray(masks.sample_drop_path(jax.random.key(5), jnp.full((6,), 0.5), 32))
    self.assertEqual(keep.shape, (32, 6))
    self.assertGreater(len({tuple(row) for row in keep}), 1)

  @chex.variants(with_jit=True, without_jit=True)
  def test_certain_gates(self):
    keep = self.variant(masks.sample_drop_path, static_argnums=2)(
        jax.random.key(3), jnp.array([0.0, 1.0, 1.0, 0.0]), 3)
    np.testing.assert_array_equal(keep, [[False, True, True, False]] * 3)


class SampleSandwichTest(_StatsTestCase, chex.TestCase):

  @parameterized.parameters(((3, 3, 3), [1, 0, 0, 1, 0, 0, 1, 0, 0]), ((2, 1), [1, 0, 1]),
                            ((1, 4), [1, 1, 0, 0, 0]))
  def test_smallest_subnet_hand_values(self, stage_sizes, want):
    np.testing.assert_array_equal(masks.smallest_subnet(stage_sizes), np.array(want, bool))
    np.testing.assert_array_equal(masks.sample_sandwich(jax.random.key(0), stage_sizes, 0),
                                  np.array([want], bool))

  @chex.variants(with_jit=True, without_jit=True)
  def test_certain_random_subnets(self):
    # drop_prob 0 keeps every block, 1 drops every droppable one: the smallest subnet.
    draw = self.variant(masks.sample_sandwich, static_argnames=('stage_sizes', 'num_random',
                                                                'sampler'))
    kept = draw(jax.random.key(1), stage_sizes=(2, 2), num_random=2, sampler='bernoulli',
                drop_prob=0.0)
    np.testing.assert_array_equal(kept, [[1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    dropped = draw(jax.random.key(1), stage_sizes=(2, 2), num_random=3, sampler='bernoulli',
                   drop_prob=1.0)
    np.testing.assert_array_equal(dropped, [[1, 0, 1, 0]] * 4)

  def test_random_rows_are_independent_draws_from_the_full_network(self):
    key = jax.random.key(4)
    rows = masks.sample_sandwich(key, (3, 3, 3), 3, sampler='prefix')
    self.assertEqual(rows.shape, (4, 9))
    for i, k in enumerate(jax.random.split(key, 3)):
      np.testing.assert_array_equal(rows[1 + i], masks.sample_subnet(k, (3, 3, 3),
                                                                     sampler='prefix'))
    draws = np.asarray(jax.jit(jax.vmap(lambda k: masks.sample_sandwich(k, (3, 3, 3), 2)))(
        _keys(6)))
    np.testing.assert_array_equal(draws[:, 0], np.broadcast_to(
        masks.smallest_subnet((3, 3, 3)), (NUM_DRAWS, 9)))
    # 'prefix': each stage keeps d ~ UniformInt{1..3} leading blocks, in each random row.
    depths = draws[:, 1:].reshape(NUM_DRAWS, 2, 3, 3).sum(-1)
    for row in range(2):
      for depth in (1, 2, 3):
        self.assert_frequency((depths[:, row, 0] == depth).mean(), 1 / 3, NUM_DRAWS,
                              f'row {row + 1} depth {depth}')
    corr = np.corrcoef(depths[:, 0, 0], depths[:, 1, 0])[0, 1]
    self.assertLess(abs(corr), SIGMAS / math.sqrt(NUM_DRAWS))


class StaticMasksTest(chex.TestCase):

  def test_droppable_mask(self):
    np.testing.assert_array_equal(masks.droppable_mask((3, 2, 1)),
                                  [False, True, True, False, True, False])

  @parameterized.parameters((), (0, 2))
  def test_bad_stage_sizes(self, *stage_sizes):
    with self.assertRaisesRegex(ValueError, 'stage_sizes'):
      masks.droppable_mask(stage_sizes)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('mixed', [2, 1, 1], [True, True, False, True, False, True]),
      ('full', [3, 2, 1], [True] * 6),
      ('beyond_stage', [5, 1, 9], [True, True, True, True, False, True]),
      ('stage_firsts', [1, 1, 1], [True, False, False, True, False, True]),
  )
  def test_first_blocks_mask(self, depths, expected):
    mask_fn = self.variant(masks.first_blocks_mask, static_argnums=0)
    mask = mask_fn((3, 2, 1), jnp.array(depths))
    self.assertEqual(mask.dtype, jnp.bool_)
    np.testing.assert_array_equal(mask, expected)

  def test_first_blocks_mask_bad_depths(self):
    with self.assertRaisesRegex(ValueError, r'depths.*\(3,\)'):
      masks.first_blocks_mask((3, 2, 1), jnp.array([1, 1]))


class PrefixSamplerTest(_StatsTestCase, chex.TestCase):

  def _depths(self, draws, stage_sizes):
    bounds = np.cumsum((0,) + stage_sizes)
    return np.stack([draws[:, a:b].sum(-1) for a, b in zip(bounds[:-1], bounds[1:])], -1)

  @parameterized.named_parameters(
      ('default', None, [(1, 2, 3), (1, 2, 3, 4), (1, 2)]),
      ('restricted', (1, 2, 2), [(3,), (3, 4), (1, 2)]),
      ('restricted_2', (2, 3, 1), [(2, 3), (2, 3, 4), (2,)]),
  )
  def test_depth_distribution(self, max_shortening, support):
    stage_sizes = (3, 4, 2)
    kw = () if max_shortening is None else (('max_shortening', max_shortening),)
    draws = np.asarray(_draw_subnets(_keys(1), None, stage_sizes=stage_sizes,
                                     sampler='prefix', kw=kw))
    depths = self._depths(draws, stage_sizes)
    # Every draw is the prefix mask of its depths.
    np.testing.assert_array_equal(
        draws, jax.vmap(lambda d: masks.first_blocks_mask(stage_sizes, d))(depths))
    for s, values in enumerate(support):
      self.assertContainsSubset(set(depths[:, s].tolist()), set(values), f'stage {s}')
      for d in values:
        self.assert_frequency((depths[:, s] == d).mean(), 1 / len(values), NUM_DRAWS,
                              f'stage {s} depth {d}')
    # Independent stages.
    self.assert_frequency(
        ((depths[:, 1] == support[1][-1]) & (depths[:, 2] == support[2][0])).mean(),
        1 / (len(support[1]) * len(support[2])), NUM_DRAWS, 'joint')

  @chex.variants(with_jit=True, without_jit=True)
  def test_with_parent_is_intersection(self):
    stage_sizes = (3, 4, 2)
    parent = jnp.array([1, 0, 1, 1, 1, 0, 1, 1, 1], bool)
    sample = self.variant(masks.sample_subnet, static_argnames=('stage_sizes', 'sampler'))
    for seed in range(5):
      key = jax.random.key(seed)
      alone = sample(key, stage_sizes, sampler='prefix')
      child = sample(key, stage_sizes, sampler='prefix', parent=parent)
      np.testing.assert_array_equal(child, alone & parent)

  @parameterized.parameters((0, 1, 1), (4, 1, 1), (1, 1))
  def test_bad_max_shortening(self, *max_shortening):
    with self.assertRaisesRegex(ValueError, r'max_shortening=.*1 <= M_s <= n_s'):
      masks.sample_subnet(jax.random.key(0), (3, 4, 2), sampler='prefix',
                          max_shortening=max_shortening)


class BernoulliSamplerTest(_StatsTestCase, chex.TestCase):

  def test_drop_rate_and_independence(self):
    stage_sizes = (3, 3)
    draws = np.asarray(_draw_subnets(_keys(2), None, stage_sizes=stage_sizes,
                                     sampler='bernoulli', kw=(('drop_prob', 0.3),)))
    droppable = masks.droppable_mask(stage_sizes)
    self.assertTrue(draws[:, ~droppable].all())
    for i in np.flatnonzero(droppable):
      self.assert_frequency(draws[:, i].mean(), 0.7, NUM_DRAWS, f'block {i}')
    self.assert_frequency((draws[:, 1] & draws[:, 5]).mean(), 0.49, NUM_DRAWS, 'joint')

  def test_default_drop_prob(self):
    draws = np.asarray(_draw_subnets(_keys(3), None, stage_sizes=(5,), sampler='bernoulli'))
    self.assert_frequency(draws[:, 1:].mean(), 0.8, 4 * NUM_DRAWS, 'kept')

  @chex.variants(with_jit=True, without_jit=True)
  def test_extreme_drop_probs(self):
    stage_sizes = (3, 4, 2)
    parent = jnp.array([1, 0, 1, 1, 1, 0, 1, 1, 1], bool)
    sample = self.variant(masks.sample_subnet, static_argnames=('stage_sizes', 'sampler'))
    key = jax.random.key(4)
    np.testing.assert_array_equal(
        sample(key, stage_sizes, sampler='bernoulli', parent=parent, drop_prob=0.0), parent)
    np.testing.assert_array_equal(
        sample(key, stage_sizes, sampler='bernoulli', parent=parent, drop_prob=1.0),
        [True, False, False, True, False, False, False, True, False])

  @parameterized.parameters(1.5, -0.2)
  def test_bad_drop_prob(self, drop_prob):
    with self.assertRaisesRegex(ValueError, rf'drop_prob={drop_prob}.*\[0, 1\]'):
      masks.sample_subnet(jax.random.key(0), (3, 3), drop_prob=drop_prob)


class GeometricSamplerTest(_StatsTestCase, chex.TestCase):

  @parameterized.parameters(0.5, 0.3)
  def test_count_distribution(self, gamma):
    stage_sizes = (8, 8)
    draws = np.asarray(_draw_subnets(_keys(5), None, stage_sizes=stage_sizes,
                                     sampler='geometric', kw=(('gamma', gamma),)))
    droppable = masks.droppable_mask(stage_sizes)
    self.assertTrue(draws[:, ~droppable].all())
    dropped = (~draws[:, droppable]).sum(-1)
    self.assertGreaterEqual(dropped.min(), 1)
    weights = gamma ** np.arange(1, 15)
    probs = weights / weights.sum()
    for k in range(1, 6):
      self.assert_frequency((dropped == k).mean(), probs[k - 1], NUM_DRAWS, f'k={k}')
    # The k dropped blocks are uniform over the 14 available: each is dropped w.p. E[k]/14.
    drop_rate = float(np.dot(np.arange(1, 15), probs)) / 14
    for i in np.flatnonzero(droppable):
      self.assert_frequency(1 - draws[:, i].mean(), drop_rate, NUM_DRAWS, f'block {i}')

  @parameterized.parameters((0.5, 2 / 3), (2.0, 1 / 3))
  def test_two_available(self, gamma, prob_one):
    stage_sizes = (3, 2)
    parent = jnp.array([1, 1, 0, 1, 1], bool)  # Blocks 1 and 4 may still be dropped.
    draws = np.asarray(_draw_subnets(_keys(6), parent, stage_sizes=stage_sizes,
                                     sampler='geometric', kw=(('gamma', gamma),)))
    self.assertFalse(draws[:, 2].any())
    self.assertTrue(draws[:, [0, 3]].all())
    dropped = 2 - draws[:, [1, 4]].sum(-1)
    self.assertGreaterEqual(dropped.min(), 1)
    self.assert_frequency((dropped == 1).mean(), prob_one, NUM_DRAWS, 'k=1')
    one = draws[dropped == 1]
    self.assert_frequency(one[:, 1].mean(), 0.5, len(one), 'which block')

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_matches_no_jit_with_traced_parent(self):
    stage_sizes = (3, 4, 2)
    parent = jnp.array([1, 1, 0, 1, 1, 0, 1, 1, 1], bool)
    sample = self.variant(masks.sample_subnet, static_argnames=('stage_sizes', 'sampler'))
    for seed in range(5):
      key = jax.random.key(seed)
      expected = masks.sample_subnet(key, stage_sizes, sampler='geometric', parent=parent)
      np.testing.assert_array_equal(
          sample(key, stage_sizes, sampler='geometric', parent=parent), expected)

  def test_no_droppable_blocks(self):
    mask = masks.sample_subnet(jax.random.key(0), (1, 1), sampler='geometric')
    np.testing.assert_array_equal(mask, [True, True])

  @parameterized.parameters(0.0, -1.0, float('inf'))
  def test_bad_gamma(self, gamma):
    with self.assertRaisesRegex(ValueError, rf'gamma={gamma}.*> 0'):
      masks.sample_subnet(jax.random.key(0), (3, 3), sampler='geometric', gamma=gamma)


class SampleSubnetTest(chex.TestCase):

  @parameterized.parameters('prefix', 'bernoulli', 'geometric')
  def test_child_equals_parent_when_nothing_left(self, sampler):
    stage_sizes = (3, 4, 2)
    parent = jnp.asarray(~masks.droppable_mask(stage_sizes))
    draws = _draw_subnets(_keys(7, 1000), parent, stage_sizes=stage_sizes, sampler=sampler)
    np.testing.assert_array_equal(draws, jnp.broadcast_to(parent, draws.shape))

  @parameterized.parameters('prefix', 'bernoulli', 'geometric')
  def test_subnet_of_parent_keeps_stage_firsts(self, sampler):
    stage_sizes = (3, 4, 2)
    droppable = masks.droppable_mask(stage_sizes)
    num = 4000
    parents = jax.random.bernoulli(jax.random.key(8), 0.6, (num, 9)) | ~droppable
    children = np.asarray(jax.jit(jax.vmap(
        lambda k, p: masks.sample_subnet(k, stage_sizes, sampler=sampler, parent=p)))(
            _keys(9, num), parents))
    parents = np.asarray(parents)
    self.assertEqual(children.dtype, np.bool_)
    self.assertFalse((children & ~parents).any(), 'a child keeps a block its parent drops')
    self.assertTrue(children[:, ~droppable].all(), 'a stage-first block was dropped')
    self.assertTrue((children != parents).any(), 'the sampler never drops anything')

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('prefix', 'bernoulli', 'geometric')
  def test_default_parent_is_the_full_network(self, sampler):
    # Without a parent, each sampler's documented rule applied to the full network, rebuilt
    # in numpy from the raw draws of the same key (not by passing an all-ones parent, which
    # is how the default is built).
    stage_sizes = (3, 4, 2)
    droppable = masks.droppable_mask(stage_sizes)
    sample = self.variant(masks.sample_subnet, static_argnames=('stage_sizes', 'sampler'))
    draws = []
    for seed in range(10, 16):
      key = jax.random.key(seed)
      if sampler == 'prefix':  # d_s = n_s - m_s, m_s ~ UniformInt{0..n_s-1}
        depths = np.subtract(stage_sizes, jax.random.randint(key, (3,), 0, jnp.array(stage_sizes)))
        want = np.concatenate([np.arange(n) < d for n, d in zip(stage_sizes, depths)])
      elif sampler == 'bernoulli':  # every droppable block dropped w.p. 0.2
        want = ~(np.asarray(jax.random.bernoulli(key, 0.2, (9,))) & droppable)
      else:  # k ~ P(k) ∝ 0.5^k on 1..6 (all 6 droppable blocks available), then k of them
        count_key, choice_key = jax.random.split(key)
        k = 1 + int(jax.random.categorical(count_key, jnp.arange(1, 7) * jnp.log(0.5)))
        priority = np.where(droppable, jax.random.uniform(choice_key, (9,)), 2.0)
        want = np.ones(9, bool)
        want[np.argsort(priority)[:k]] = False
      draws.append(want)
      np.testing.assert_array_equal(sample(key, stage_sizes, sampler=sampler), want,
                                    f'seed {seed}')
    self.assertGreater(len({d.tobytes() for d in draws}), 1)

  def test_unknown_sampler(self):
    with self.assertRaisesRegex(ValueError,
                                r"sampler='uniform'.*'prefix', 'bernoulli', 'geometric'"):
      masks.sample_subnet(jax.random.key(0), (3, 3), sampler='uniform')

  @parameterized.parameters(('bernoulli', 'gamma', 'drop_prob'),
                            ('geometric', 'drop_prob', 'gamma'),
                            ('prefix', 'drop_prob', 'max_shortening'))
  def test_unknown_keyword(self, sampler, bad, allowed):
    with self.assertRaisesRegex(ValueError, rf"'{bad}'.*{sampler}.*'{allowed}'"):
      masks.sample_subnet(jax.random.key(0), (3, 3), sampler=sampler, **{bad: 0.5})

  def test_bad_parent_shape(self):
    with self.assertRaisesRegex(ValueError, r'parent.*\(6,\)'):
      masks.sample_subnet(jax.random.key(0), (3, 3), parent=jnp.ones(5, bool))


class SampleNestedSubnetsTest(_StatsTestCase, chex.TestCase):

  def test_bernoulli_level_keep_rates(self):
    stage_sizes = (3, 3, 2)
    drop_prob = 0.2
    chains = np.asarray(_draw_chains(_keys(11), stage_sizes=stage_sizes, num_subnets=3,
                                     sampler='bernoulli', kw=(('drop_prob', drop_prob),)))
    droppable = masks.droppable_mask(stage_sizes)
    for g in range(1, 4):
      kept = chains[:, g - 1][:, droppable]
      self.assert_frequency(kept.mean(), (1 - drop_prob)**g, kept.size, f'level {g}')

  @parameterized.parameters('prefix', 'bernoulli', 'geometric')
  def test_nesting(self, sampler):
    stage_sizes = (3, 4, 2)
    num_subnets = 4
    chains = np.asarray(_draw_chains(_keys(12, 4000), stage_sizes=stage_sizes,
                                     num_subnets=num_subnets, sampler=sampler))
    self.assertEqual(chains.shape, (4000, num_subnets, 9))
    self.assertEqual(chains.dtype, np.bool_)
    self.assertFalse((chains[:, 1:] & ~chains[:, :-1]).any(), 'row k keeps a dropped block')
    self.assertTrue(chains[:, :, ~masks.droppable_mask(stage_sizes)].all())
    # Rows are not copies of one draw: the chain shrinks.
    self.assertGreater(chains[:, 0].sum(), chains[:, -1].sum())
    if sampler == 'geometric':  # Each level drops >= 1 block while any is left.
      kept = chains.sum(-1)
      kept = np.concatenate([np.full((len(kept), 1), 9), kept], 1)
      shrink = kept[:, :-1] - kept[:, 1:]
      self.assertTrue(((shrink >= 1) | (kept[:, :-1] == 3)).all())

  @chex.variants(with_jit=True, without_jit=True)
  def test_rows_follow_split_keys(self):
    stage_sizes = (3, 4, 2)
    nested = self.variant(masks.sample_nested_subnets,
                          static_argnames=('stage_sizes', 'num_subnets', 'sampler'))
    key = jax.random.key(13)
    chain = nested(key, stage_sizes, num_subnets=3, sampler='geometric', gamma=0.7)
    parent = jnp.ones(9, bool)
    for row, subnet_key in zip(chain, jax.random.split(key, 3)):
      parent = masks.sample_subnet(subnet_key, stage_sizes, sampler='geometric', parent=parent,
                                   gamma=0.7)
      np.testing.assert_array_equal(row, parent)

  def test_empty_chain(self):
    chain = masks.sample_nested_subnets(jax.random.key(0), (3, 3), 0)
    self.assertEqual(chain.shape, (0, 6))

  def test_errors_pass_through(self):
    with self.assertRaisesRegex(ValueError, "sampler='foo'"):
      masks.sample_nested_subnets(jax.random.key(0), (3, 3), 2, sampler='foo')
    with self.assertRaisesRegex(ValueError, 'num_subnets=-1'):
      masks.sample_nested_subnets(jax.random.key(0), (3, 3), -1)


class MethodSamplingRulesTest(_StatsTestCase):
  """`sample_masks` of GKT and stimulative training on a ResNet-20 (3 blocks per stage, all
  but the first droppable: 6 in all)."""

  @parameterized.parameters('bernoulli', 'geometric')
  def test_gkt_loops_of_nested_levels_each_from_the_full_network(self, sampler):
    levels, loops = 3, 2
    draws = _method_masks(20, name='gkt', levels=levels, loops=loops, sampler=sampler)
    self.assertEqual(draws.shape, (NUM_DRAWS, loops * levels, 9))
    chains = draws.reshape(NUM_DRAWS, loops, levels, 9)  # row i: loop i // 3, level i % 3 + 1
    droppable = masks.droppable_mask((3, 3, 3))
    self.assertTrue(chains[..., ~droppable].all(), 'a stage-first block was dropped')
    self.assertFalse((chains[:, :, 1:] & ~chains[:, :, :-1]).any(),
                     'level g keeps a block that level g - 1 of its loop drops')
    # Each loop restarts from the full network, not from the last level of the loop before.
    self.assertTrue((chains[:, 1, 0] & ~chains[:, 0, -1]).any(-1).any())
    kept = chains[..., droppable].sum(-1)  # int[N, loops, levels] in 0..6
    for g in range(levels):
      for count in range(7):
        self.assert_same_frequency((kept[:, 0, g] == count).mean(),
                                   (kept[:, 1, g] == count).mean(), NUM_DRAWS,
                                   f'level {g + 1} keeps {count}: loop 1 vs loop 2')
    # The loops are independent draws: level g's kept counts are uncorrelated across loops
    # (std of a sample correlation: 1/sqrt(N)).
    for g in range(levels):
      corr = np.corrcoef(kept[:, 0, g], kept[:, 1, g])[0, 1]
      self.assertLess(abs(corr), SIGMAS / math.sqrt(NUM_DRAWS), f'level {g + 1}')
    if sampler == 'bernoulli':  # drop_prob 0.2: level g keeps Binomial(6, 0.8^g) blocks
      for loop in range(loops):
        for g in range(1, levels + 1):
          q = 0.8 ** g
          for count in range(7):
            self.assert_frequency((kept[:, loop, g - 1] == count).mean(),
                                  math.comb(6, count) * q**count * (1 - q)**(6 - count),
                                  NUM_DRAWS, f'loop {loop + 1} level {g} keeps {count}')
    else:  # each level drops >= 1 more while any droppable block is left
      shrink = np.concatenate([np.full((NUM_DRAWS, loops, 1), 6), kept], -1)
      self.assertTrue(((shrink[..., 1:] < shrink[..., :-1]) | (shrink[..., :-1] == 0)).all())

  def test_stimulative_rows_are_independent_prefix_draws_from_the_full_network(self):
    n_sub = 6
    draws = _method_masks(21, name='stimulative', n_sub=n_sub)
    self.assertEqual(draws.shape, (NUM_DRAWS, n_sub, 9))
    by_stage = draws.reshape(NUM_DRAWS, n_sub, 3, 3)
    depths = by_stage.sum(-1)  # int[N, rows, stages]
    # Every row keeps a prefix of every stage, of a depth uniform on 1..3.
    np.testing.assert_array_equal(by_stage, np.arange(3) < depths[..., None])
    for row in range(n_sub):
      for stage in range(3):
        for d in (1, 2, 3):
          self.assert_frequency((depths[:, row, stage] == d).mean(), 1 / 3, NUM_DRAWS,
                                f'row {row} stage {stage} depth {d}')
    # Independent rows: two rows are the same subnet w.p. (1/3)^3, not 1 (copies of one draw)
    # nor 0; their kept counts are uncorrelated (std of a sample correlation: 1/sqrt(N)).
    for row in range(1, n_sub):
      self.assert_frequency((draws[:, 0] == draws[:, row]).all(-1).mean(), 1 / 27, NUM_DRAWS,
                            f'rows 0 and {row} equal')
    corr = np.corrcoef(draws.sum(-1).T)
    self.assertLess(np.abs(corr[~np.eye(n_sub, dtype=bool)]).max(), SIGMAS / math.sqrt(NUM_DRAWS))


if __name__ == '__main__':
  absltest.main()
