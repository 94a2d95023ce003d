"""Cost accounting and BatchNorm recalibration."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from gkt_jax import evaluate, masks, methods
from gkt_jax.config import evals as evals_config
import ml_collections
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

  def test_recalibrator_compiles_once(self):
    # A run builds one recalibrator and calls it at every evaluation with new variables.
    kw = dict(stage_sizes=(1,), stage_widths=(4,), num_classes=3, stem_width=4)
    model = ResNet(**kw)
    images = jax.random.normal(jax.random.key(0), (3, 8, 4, 4, 3))
    variables = model.init(jax.random.key(1), images[0], train=False)
    recalibrate = evaluate.make_recalibrator(model, model.bn_momentum)
    first = recalibrate(variables, images)
    second = recalibrate(jax.tree.map(lambda a: a + 1.0, variables), images)
    self.assertEqual(recalibrate._cache_size(), 1)  # pylint: disable=protected-access
    self.assertFalse(np.allclose(jax.tree.leaves(first['batch_stats'])[0],
                                 jax.tree.leaves(second['batch_stats'])[0]))
    one = [evaluate.recalibrate_batch_stats(model, variables, [x], model.bn_momentum)
           for x in images]
    want = jax.tree.map(lambda *s: sum(s) / 3, *[o['batch_stats'] for o in one])
    chex.assert_trees_all_close(first['batch_stats'], want, atol=1e-5)


  def test_statistics_of_the_deployed_network(self):
    # Stochastic depth deploys its branches scaled by p_i: the recalibrated statistics must be
    # that network's, so that on the recalibration batch itself the deployed network in eval
    # mode computes what it computes in train mode (its own batch statistics).
    model = ResNet(stage_sizes=(2, 2), stage_widths=(4, 8), num_classes=3, stem_width=4)
    method = methods.get_method(ml_collections.ConfigDict(
        {'name': 'stochastic_depth', 'final_survival': 0.3}), model)
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    variables = model.init(jax.random.key(1), images, train=False)
    kwargs = method.deployed_apply_kwargs()
    self.assertIn('residual_scale', kwargs)
    train_mode = model.apply(variables, images, train=True, mutable=['batch_stats'],
                             **kwargs)[0][0]
    ours = evaluate.recalibrate_batch_stats(model, variables, [images], model.bn_momentum,
                                            kwargs)
    np.testing.assert_allclose(method.predict(ours, images), train_mode, atol=2e-4)
    # The unscaled network's statistics are another network's.
    unscaled = evaluate.recalibrate_batch_stats(model, variables, [images], model.bn_momentum)
    self.assertGreater(np.abs(method.predict(unscaled, images) - train_mode).max(), 1e-2)
    # The inverted rule deploys the plain network: nothing to pass.
    inverted = methods.get_method(ml_collections.ConfigDict(
        {'name': 'stochastic_depth', 'test_scaling': False}), model)
    self.assertEqual(inverted.deployed_apply_kwargs(), {})


class EvaluatorsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = ResNet(stage_sizes=(3, 2), stage_widths=(4, 8), num_classes=3, stem_width=4)
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (37, 8, 8, 1), dtype=np.uint8)  # 37: a padded batch
    self.labels = rng.integers(0, 3, (37,)).astype(np.int32)
    self.variables = self.model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    method = methods.get_method(ml_collections.ConfigDict({'name': 'baseline'}), self.model)
    self.runner = evaluate.EvalRunner(self.model, method, self.images, self.labels,
                                      mean=[0.5], std=[0.25], batch_size=16)
    self.runner.variables = self.variables

  def _direct_accuracy(self, keep_mask=None):
    x = (self.images.astype(np.float32) / 255.0 - 0.5) / 0.25
    logits = self.model.apply(self.variables, x, keep_mask=keep_mask, train=False)[0]
    return float(np.mean(np.argmax(logits, -1) == self.labels))

  def test_subnet_accuracy_matches_direct_computation(self):
    keep = np.array([True, False, True, True, False])
    self.assertAlmostEqual(self.runner.subnet_accuracy(keep),
                           self._direct_accuracy(jnp.asarray(keep)), places=6)
    self.assertAlmostEqual(self.runner.deployed_accuracy(), self._direct_accuracy(), places=6)

  def test_many_subnets_in_one_program_match_direct_computation(self):
    # 2 calls of MASKS_PER_CALL + 3 (padded) rows; every row its own accuracy, in order.
    num = 2 * evaluate.MASKS_PER_CALL + 3
    rows = np.array(jax.random.bernoulli(jax.random.key(9), 0.5, (num, 5)))
    rows[:, [0, 3]] = True
    rows[-1] = [True, False, False, True, False]
    got = self.runner.subnet_accuracies(rows)
    self.assertEqual(got.shape, (num,))
    distinct = {m.tobytes(): self._direct_accuracy(jnp.asarray(m)) for m in rows}
    np.testing.assert_allclose(got, [distinct[m.tobytes()] for m in rows], atol=1e-6)
    self.assertGreater(len(set(distinct.values())), 1)  # rows told apart
    # pylint: disable-next=protected-access
    self.assertEqual(self.runner._correct_subnets._cache_size(), 1)
    with self.assertRaisesRegex(ValueError, r'bool\[N >= 1, L\], got shape \(5,\)'):
      self.runner.subnet_accuracies(rows[0])

  def test_block_deletion_deletes_each_droppable_block(self):
    out = evaluate.EVALUATORS['block_deletion'](self.runner)
    self.assertEqual([i for i, _ in out['block_deletion']], [1, 2, 4])  # not stage-first 0, 3
    for i, acc in out['block_deletion']:
      keep = np.ones(5, bool)
      keep[i] = False
      self.assertAlmostEqual(acc, self._direct_accuracy(jnp.asarray(keep)), places=6)

  def test_depth_curve_groups_by_kept_blocks(self):
    curve = evaluate.EVALUATORS['depth_curve'](self.runner, num_subnets=12)['depth_curve']
    kept = [c[0] for c in curve]
    self.assertEqual(kept, sorted(set(kept)))
    self.assertEqual(kept[-1], 5)                  # the full network is always included
    self.assertAlmostEqual(curve[-1][1], self._direct_accuracy(), places=6)
    self.assertTrue(all(2 <= k <= 5 for k in kept))  # stage-first blocks always kept

  def test_nested_depth_curve_covers_the_chains(self):
    out = evaluate.EVALUATORS['nested_depth_curve'](self.runner, num_chains=5, levels=3,
                                                     drop_prob=0.5, seed=4)
    chains = np.asarray(jax.vmap(lambda k: masks.sample_nested_subnets(
        k, (3, 2), 3, sampler='bernoulli', drop_prob=0.5))(
            jax.random.split(jax.random.key(4), 5))).reshape(-1, 5)
    rows = np.unique(np.concatenate([np.ones((1, 5), bool), chains]), axis=0)
    curve = out['nested_depth_curve']
    self.assertEqual([c[0] for c in curve], sorted(set(rows.sum(-1).tolist())))
    self.assertEqual(sum(c[2] for c in curve), len(rows))
    for kept, acc, _ in curve:
      accs = [self._direct_accuracy(jnp.asarray(m)) for m in rows if m.sum() == kept]
      self.assertAlmostEqual(acc, np.mean(accs), places=6)

  def test_pruned_depth_drops_every_other_droppable_block(self):
    # Stage sizes (3, 2): droppable blocks 1, 2, 4 (j = 1, 2, 3); period 2 prunes j = 2
    # (block 2), period 3 prunes j = 3 (block 4), period 1 all three.
    settings = evals_config.read_one('pruned', {'type': 'pruned_depth', 'periods': (2, 3, 1)})
    out = evaluate.run_evaluators(self.runner, {'pruned': settings.arguments()}, final=True)
    for period, keep in ((2, [1, 1, 0, 1, 1]), (3, [1, 1, 1, 1, 0]), (1, [1, 0, 0, 1, 0])):
      np.testing.assert_array_equal(masks.pruned_every_other((3, 2), period),
                                    np.array(keep, bool))
      self.assertAlmostEqual(out[f'pruned_acc/period{period}'],
                             self._direct_accuracy(jnp.asarray(keep, bool)), places=6)
      self.assertEqual(out[f'pruned_kept/period{period}'], sum(keep))
    self.assertEqual(evals_config.read_one('p', {'type': 'pruned_depth'}).periods, (2,))

  def test_unknown_evaluator(self):
    with self.assertRaisesRegex(ValueError, "evals.x.type='nope'"):
      evaluate.run_evaluators(self.runner, {'x': {'type': 'nope'}}, final=True)


class SummaryRowsTest(absltest.TestCase):

  def test_rows_name_each_evaluators_values(self):
    summary = {'full_accuracy': 0.9, 'path_acc/main': 0.91, 'path_acc/cm2': 0.8,
               'path_acc/ensemble': 0.92, 'subnet_acc/level2': 0.6, 'subnet_kept/level2': 6.0,
               'subnet_acc/level1': 0.7, 'subnet_kept/level1': 7.5, 'subnet_acc/level4': 0.1,
               'block_deletion_mean': 0.5, 'depth_curve': [[9, 0.9, 1]],
               'pruned_acc/period2': 0.4, 'pruned_kept/period2': 6, 'pruned_acc/period3': 0.3}
    self.assertEqual(evaluate.level_points(summary), [(1, 7.5, 0.7), (2, 6.0, 0.6)])
    self.assertEqual(evaluate.summary_rows(summary), [
        ('main path (deployed)', 0.91), ('classmate path cm2', 0.8),
        ('ensemble of all paths', 0.92), ('subnet level 1 (~7.5 blocks)', 0.7),
        ('subnet level 2 (~6.0 blocks)', 0.6), ('one block deleted (mean)', 0.5),
        ('every other droppable block pruned (6 blocks)', 0.4),
        ('one droppable block in 3 pruned', 0.3)])
    self.assertEqual(evaluate.summary_rows({'full_accuracy': 0.9}), [])


class StochasticDepthEvaluationTest(absltest.TestCase):
  """Subnet evaluators run a method's test-time network: stochastic depth's scaled one.

  Expected accuracies come from the plain network (no keep mask, no residual_scale) whose
  last branch BatchNorm of block i is multiplied by keep_i * p_i (`_reference`), with
  p_i written out by hand, and an argmax in numpy. The labels are the predictions of that
  scaled full network, so the deployed network scores 1.0 and every misplaced scale shows.
  """

  def setUp(self):
    super().setUp()
    self.model = ResNet(stage_sizes=(3, 2), stage_widths=(4, 8), num_classes=3, stem_width=4)
    rng = np.random.default_rng(1)
    self.images = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    self.x = (self.images.astype(np.float32) / 255.0 - 0.5) / 0.25
    self.survival = 1.0 - np.arange(1, 6) / 5 * (1.0 - 0.2)  # linear rule, p_L = 0.2
    variables = self.model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)), train=False)
    # A head centred and whitened on the scaled network's pooled features: random images
    # pool to nearly equal features, which a plain head maps to one class for every image.
    pooled = self._reference(variables, self.survival)[1]
    kernel = np.asarray(jax.random.normal(jax.random.key(101), (8, 3))) / (
        pooled.std(0)[:, None] + 1e-6)
    self.variables = {**variables, 'params': {**variables['params'], 'head': {
        'kernel': jnp.asarray(kernel, jnp.float32),
        'bias': jnp.asarray(-pooled.mean(0) @ kernel, jnp.float32)}}}
    logits = self._reference_logits(self.survival)
    self.labels = np.argmax(logits, -1).astype(np.int32)
    self.assertEqual(len(set(self.labels.tolist())), 3)
    top2 = np.sort(logits, -1)[:, -2:]
    self.assertGreater(np.min(top2[:, 1] - top2[:, 0]), 1e-4)  # no near-ties to round over
    self.method = methods.get_method(ml_collections.ConfigDict(
        {'name': 'stochastic_depth', 'final_survival': 0.2}), self.model)
    self.runner = evaluate.EvalRunner(self.model, self.method, self.images, self.labels,
                                      mean=[0.5], std=[0.25], batch_size=32)
    self.runner.variables = self.variables

  def _reference(self, variables, factors):
    """(logits, pooled features) in numpy of the plain network with the residual branch of
    block i scaled by factors[i] in its weights."""
    params = dict(variables['params'])
    for s, n in enumerate(self.model.stage_sizes):
      for j in range(n):
        name = f'stage{s + 1}_block{j + 1}'
        factor = factors[sum(self.model.stage_sizes[:s]) + j]
        branch = params[name]['branch']
        params[name] = {**params[name], 'branch': {
            **branch, 'bn2': jax.tree.map(lambda a: a * factor, branch['bn2'])}}
    logits, features = self.model.apply({**variables, 'params': params}, self.x, train=False)
    return np.asarray(logits), np.asarray(features['pre_logits'])

  def _reference_logits(self, factors):
    return self._reference(self.variables, np.asarray(factors, np.float64))[0]

  def _accuracy(self, logits):
    return float(np.mean(np.argmax(logits, -1) == self.labels))

  def test_all_blocks_point_is_the_scaled_network(self):
    curve = evaluate.EVALUATORS['depth_curve'](self.runner, num_subnets=4)['depth_curve']
    self.assertEqual(curve[-1][0], 5)
    want = self._accuracy(self._reference_logits(self.survival))  # 1.0: the labels
    self.assertEqual(want, 1.0)
    self.assertEqual(curve[-1][1], want,
                     msg='the depth curve\'s all-blocks point is not the scaled network\'s')
    self.assertEqual(evaluate.EVALUATORS['full'](self.runner)['full_accuracy'], want)
    # The unscaled network disagrees on many images: the check tells the two apart.
    self.assertLess(self._accuracy(self._reference_logits(np.ones(5))), 0.9)

  def test_all_true_row_is_measured_by_the_deployed_program(self):
    # Where the masked program differs from the deployed one (float rounding on a backend
    # without cond boundaries; made large here: every masked prediction is class c), the
    # full-network row still reports the deployed network's accuracy, the others the masked
    # program's.
    deployed = self.runner.deployed_accuracy()
    c = next(c for c in range(3) if np.mean(self.labels == c) != deployed)
    self.method.subnet_logits = lambda v, x, keep: jnp.broadcast_to(
        jax.nn.one_hot(c, 3), (x.shape[0], 3))
    accs = self.runner.subnet_accuracies(np.array([[True] * 5, [True, False, True, True, False]]))
    self.assertEqual(accs[0], deployed)
    self.assertEqual(accs[1], np.mean(self.labels == c))

  def test_subnets_scale_their_kept_blocks(self):
    keep = np.array([True, False, True, True, False])
    want = self._accuracy(self._reference_logits(keep * self.survival))
    self.assertNotEqual(want, self._accuracy(self._reference_logits(keep * 1.0)))
    self.assertAlmostEqual(self.runner.subnet_accuracy(keep), want, places=9,
                           msg='a subnet is not relu(shortcut + keep_i * p_i * branch_i)')
    deletion = evaluate.EVALUATORS['block_deletion'](self.runner)['block_deletion']
    self.assertEqual([b for b, _ in deletion], [1, 2, 4])
    for block, acc in deletion:
      mask = np.ones(5)
      mask[block] = 0.0
      self.assertAlmostEqual(acc, self._accuracy(self._reference_logits(mask * self.survival)),
                             places=9, msg=f'block {block} deleted')


if __name__ == '__main__':
  absltest.main()
