"""Methods: gradients against hand-assembled reference losses of the specs' pseudo-code."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gkt_jax import masks, methods, models
from gkt_jax.config import method as method_config
from gkt_jax.models import ResNet
from gkt_jax.models.resnet import BasicBranch


def _setup(batch=8, side=8, num_classes=5):
  model = ResNet(stage_sizes=(3, 3), stage_widths=(4, 8), num_classes=num_classes,
                 stem_width=4, shortcut='pad')
  images = jax.random.normal(jax.random.key(1), (batch, side, side, 3))
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, num_classes)
  variables = model.init(jax.random.key(0), images, train=False)
  return model, {'images': images, 'labels': labels}, variables


def _method(model, **fields):
  return methods.get_method(ml_collections.ConfigDict(fields), model)


def _forward(model, params, stats, images, keep_mask=None):
  (logits, _), updates = model.apply({'params': params, 'batch_stats': stats}, images,
                                     keep_mask=keep_mask, train=True, mutable=['batch_stats'])
  return logits, updates['batch_stats']


def _log_softmax(z):
  return z - jax.scipy.special.logsumexp(z, axis=-1, keepdims=True)


def _kl(student, teacher, t):
  p = jnp.exp(_log_softmax(teacher / t))
  return t * t * jnp.mean(jnp.sum(p * (_log_softmax(teacher / t) - _log_softmax(student / t)), -1))


def _ce(logits, labels):
  return -jnp.mean(jnp.take_along_axis(_log_softmax(logits), labels[:, None], -1))


def _reference_gkt(model, params, stats, batch, subnet_masks, levels, loops, momentum,
                   aggregate, temperature, kl_weight):
  """The step of methods/gkt.md written out with Python loops (BN stats threaded in order)."""
  images, labels = batch['images'], batch['labels']
  logits, stats = _forward(model, params, stats, images)
  total = _ce(logits, labels)
  knowledge = [jax.lax.stop_gradient(logits)] + [None] * levels
  counts = [1] + [0] * levels
  i = 0
  for loop in range(loops):
    for g in range(1, levels + 1):
      z, stats = _forward(model, params, stats, images, subnet_masks[i])
      total = total + kl_weight * _kl(z, knowledge[g - 1], temperature)
      z = jax.lax.stop_gradient(z)
      if loop == 0:
        knowledge[g] = z
      elif aggregate == 'ema':
        knowledge[g] = momentum * knowledge[g] + (1 - momentum) * z
      else:
        knowledge[g] = (knowledge[g] * counts[g] + z) / (counts[g] + 1)
      counts[g] += 1
      i += 1
  return total, stats


def _block_names(stage_sizes):
  return [f'stage{s + 1}_block{j + 1}' for s, n in enumerate(stage_sizes) for j in range(n)]


def _scale_branches(params, stage_sizes, factors):
  """params with the last BatchNorm (bn2) of block i's residual branch multiplied, scale and
  bias, by factors[i]: in eval and train mode alike (BatchNorm's statistics do not depend on
  its scale and bias), the plain network then computes relu(shortcut + factors[i] * branch);
  factor 0: the branch outputs zeros, the block outputs relu(shortcut), as a dropped one."""
  params = dict(params)
  for name, factor in zip(_block_names(stage_sizes), factors):
    branch = dict(params[name]['branch'])
    branch['bn2'] = jax.tree.map(lambda a: a * factor, branch['bn2'])
    params[name] = {**params[name], 'branch': branch}
  return params


def _linear_survival(num_blocks, final_survival):
  """Stochastic depth's linear rule by hand: p_i = 1 - (i / L)(1 - p_L), i = 1..L."""
  return 1.0 - np.arange(1, num_blocks + 1) / num_blocks * (1.0 - final_survival)


def _resize_bilinear_reference(images, side):
  """PyTorch's F.interpolate(images, (side, side), mode='bilinear', align_corners=False),
  without antialiasing, in numpy (NHWC, float64): output pixel o of n_out samples the input
  at half-pixel coordinate (o + 0.5) * n_in / n_out - 0.5, clamped at 0, interpolating
  linearly between the two pixels around it (the last pixel past the far border)."""
  def weights(n_in, n_out):  # f64[n_out, n_in]
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = src - low
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(w, (np.arange(n_out), high), frac)
    return w

  images = np.asarray(images, np.float64)
  return np.einsum('oh,bhwc,pw->bopc', weights(images.shape[1], side), images,
                   weights(images.shape[2], side))


class SelfDistillationTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(levels=3, loops=2, aggregate='ema', sampler='bernoulli', temperature=1.0,
           bn_stats='every_pass'),
      dict(levels=2, loops=3, aggregate='mean', sampler='geometric', temperature=2.0,
           bn_stats='full_network'),
      dict(levels=1, loops=1, aggregate='ema', sampler='bernoulli', temperature=1.0,
           bn_stats='every_pass'),
  )
  def test_gkt_gradients_equal_reference(self, **settings):
    self._check_gkt_against_reference(**settings)

  @pytest.mark.slow  # the first case with the other BatchNorm setting (the second has it)
  def test_gkt_gradients_equal_reference_full_network_stats(self):
    self._check_gkt_against_reference(levels=3, loops=2, aggregate='ema', sampler='bernoulli',
                                      temperature=1.0, bn_stats='full_network')

  def _check_gkt_against_reference(self, levels, loops, aggregate, sampler, temperature,
                                   bn_stats):
    model, batch, variables = _setup()
    method = _method(model, name='gkt', levels=levels, loops=loops, aggregate=aggregate,
                     momentum=0.3, sampler=sampler, drop_prob=0.4, temperature=temperature,
                     kl_weight=0.7, bn_stats=bn_stats)
    key = jax.random.key(5)
    grads, (stats, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, key, {})
    subnet_masks = method.sample_masks(jax.random.split(key)[0])
    self.assertEqual(subnet_masks.shape, (levels * loops, 6))
    # What a step runs (cost accounting reads it): the full network, then these subnets.
    np.testing.assert_array_equal(method.masks_run(key),
                                  np.concatenate([np.ones((1, 6), bool), subnet_masks]))

    def reference(params):
      return _reference_gkt(model, params, variables['batch_stats'], batch, subnet_masks,
                            levels, loops, 0.3, aggregate, temperature, 0.7)

    (want_loss, want_stats), want_grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    # Running statistics: threaded through every pass in order (the reference), or the full
    # network's pass alone; the gradients are the same either way.
    _, full_stats = _forward(model, variables['params'], variables['batch_stats'],
                             batch['images'])
    expected_stats = want_stats if bn_stats == 'every_pass' else full_stats
    chex.assert_trees_all_close(stats, expected_stats, atol=1e-5, rtol=1e-5)
    differs = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(np.abs(a - b) > 1e-4)),
                                           want_stats, full_stats))
    self.assertTrue(any(differs))  # the two settings are told apart by this batch
    for g in range(1, levels + 1):
      self.assertIn(f'kl/level{g}', measurements)

  def test_stimulative_gradients_equal_reference(self):
    model, batch, variables = _setup()
    method = _method(model, name='stimulative', n_sub=3, temperature=1.5, kl_weight=1.0)
    key = jax.random.key(7)
    grads, (_, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, key, {})
    subnet_masks = method.sample_masks(jax.random.split(key)[0])
    # Prefix subnets: within each stage the kept blocks are a prefix; first blocks kept.
    for mask in np.asarray(subnet_masks):
      for stage in (mask[:3], mask[3:]):
        self.assertTrue(stage[0])
        self.assertTrue(np.all(np.diff(stage.astype(int)) <= 0))

    def reference(params):
      logits, stats = _forward(model, params, variables['batch_stats'], batch['images'])
      total = _ce(logits, batch['labels'])
      teacher = jax.lax.stop_gradient(logits)   # always the full network
      for m in subnet_masks:
        z, stats = _forward(model, params, stats, batch['images'], m)
        total = total + _kl(z, teacher, 1.5)
      return total

    want_loss, want_grads = jax.jit(jax.value_and_grad(reference))(variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)

  def test_normalized_logits_and_subnet_labels(self):
    model, batch, variables = _setup()
    method = _method(model, name='gkt', levels=1, loops=1, normalize_logits=True,
                     subnet_label_weight=0.5)
    key = jax.random.key(3)
    grads, (_, _, measurements) = method.gradients(
        variables['params'], variables['batch_stats'], batch, key, {})
    mask = method.sample_masks(jax.random.split(key)[0])[0]

    def norm(z):
      return (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-7)

    def reference(params):
      logits, stats = _forward(model, params, variables['batch_stats'], batch['images'])
      full = norm(logits)
      z, _ = _forward(model, params, stats, batch['images'], mask)
      z = norm(z)
      return (_ce(full, batch['labels']) + _kl(z, jax.lax.stop_gradient(full), 1.0)
              + 0.5 * _ce(z, batch['labels']))

    want_loss, want_grads = jax.jit(jax.value_and_grad(reference))(variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)

  def test_bilinear_reference_hand_values(self):
    # 4 -> 2: samples at 0.5 and 2.5. 3 -> 2: at 0.25 and 1.75. 2 -> 4: at -0.25 (clamped
    # to 0), 0.25, 0.75 and 1.25 (past the last pixel: the last pixel).
    for row, side, want in (([0., 1., 2., 3.], 2, [0.5, 2.5]),
                            ([0., 10., 40.], 2, [2.5, 32.5]),
                            ([0., 1.], 4, [0., 0.25, 0.75, 1.])):
      image = np.asarray(row)[None, None, :, None] * np.ones((1, len(row), 1, 1))
      got = _resize_bilinear_reference(image, side)  # rows and columns alike
      np.testing.assert_allclose(got[0, :, :, 0], np.broadcast_to(want, (side, side)),
                                 atol=1e-12)
      np.testing.assert_allclose(_resize_bilinear_reference(np.swapaxes(image, 1, 2), side),
                                 np.swapaxes(got, 1, 2), atol=1e-12)

  def test_subnet_resize(self):
    # ST++ subnets see the batch resized as PyTorch's F.interpolate(mode='bilinear',
    # align_corners=False) does: the step's gradients equal the reference run on the numpy
    # resize, and would not with an antialiased (filtered) downscale.
    model, batch, variables = _setup(side=16)
    method = _method(model, name='stimulative', n_sub=3, subnet_resize=True,
                     resize_min_scale=0.5, resize_buckets=3, temperature=1.0, kl_weight=1.0)
    sizes = method.resize_sizes(16)
    self.assertEqual(sizes, (8, 12, 16))
    key = jax.random.key(4)
    grads, (_, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, key, {})
    mask_key, size_key = jax.random.split(key)
    subnet_masks = method.sample_masks(mask_key)
    size_index = np.asarray(jax.random.randint(size_key, (3,), 0, len(sizes)))
    self.assertEqual(sorted(size_index.tolist()), [0, 1, 2])  # 16 -> 8, 16 -> 12, 16 -> 16

    @jax.jit
    def full_network(params):
      def loss(p):
        logits, stats = _forward(model, p, variables['batch_stats'], batch['images'])
        return _ce(logits, batch['labels']), (stats, jax.lax.stop_gradient(logits))
      return jax.value_and_grad(loss, has_aux=True)(params)

    @jax.jit
    def subnet(params, stats, images, mask, teacher):  # compiled once per image size
      def loss(p):
        z, new_stats = _forward(model, p, stats, images, mask)
        return _kl(z, teacher, 1.0), new_stats
      return jax.value_and_grad(loss, has_aux=True)(params)

    def reference(inputs):  # the stimulative step with subnet i on inputs[size_index[i]]
      (total, (stats, teacher)), total_grads = full_network(variables['params'])
      for m, i in zip(subnet_masks, size_index):
        (loss, stats), g = subnet(variables['params'], stats, inputs[i], m, teacher)
        total, total_grads = total + loss, jax.tree.map(jnp.add, total_grads, g)
      return total, total_grads

    images = np.asarray(batch['images'])
    resized = [jnp.asarray(_resize_bilinear_reference(images, s), jnp.float32) for s in sizes]
    want_loss, want_grads = reference(resized)
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    antialiased = [jax.image.resize(images, (8, s, s, 3), 'bilinear', antialias=True)
                   for s in sizes]
    self.assertGreater(float(jnp.max(jnp.abs(antialiased[0] - resized[0]))), 0.1)
    self.assertGreater(abs(float(reference(antialiased)[0] - want_loss)), 1e-3)

  def test_one_trace_for_every_step(self):
    model, batch, variables = _setup()
    method = _method(model, name='gkt', levels=2, loops=2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key):
      return method.gradients(variables['params'], variables['batch_stats'], batch, key, {})[0]

    chex.clear_trace_counter()
    for i in range(3):
      jax.block_until_ready(step(jax.random.key(i)))


class SandwichTest(parameterized.TestCase):

  @parameterized.parameters(dict(n_random=2, sampler='prefix'),
                            dict(n_random=1, sampler='bernoulli'))
  def test_gradients_equal_full_network_then_subnets_distilled_from_it(self, n_random,
                                                                       sampler):
    model, batch, variables = _setup()
    method = _method(model, name='sandwich', n_random=n_random, sampler=sampler,
                     drop_prob=0.5, temperature=2.0, kl_weight=0.7)
    key = jax.random.key(3)
    grads, (_, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, key, {})
    subnet_masks = method.sample_masks(jax.random.split(key)[0])
    self.assertEqual(subnet_masks.shape, (1 + n_random, 6))
    np.testing.assert_array_equal(subnet_masks[0], [1, 0, 0, 1, 0, 0])  # the smallest
    np.testing.assert_array_equal(method.masks_run(key),
                                  np.concatenate([np.ones((1, 6), bool), subnet_masks]))
    self.assertEqual(method.forwards_per_step(), 2 + n_random)

    # One level, 1 + n loops: every subnet learns from the full network's detached logits.
    def reference(params):
      return _reference_gkt(model, params, variables['batch_stats'], batch, subnet_masks, 1,
                            1 + n_random, 0.5, 'ema', 2.0, 0.7)

    (want_loss, _), want_grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    # The smallest subnet's terms, and the random subnets' mean, apart.
    params, stats = variables['params'], variables['batch_stats']
    full = _forward(model, params, stats, batch['images'])[0]
    kls = [_kl(_forward(model, params, stats, batch['images'], m)[0], full, 2.0)
           for m in subnet_masks]
    np.testing.assert_allclose(measurements['kl/smallest'], kls[0], rtol=1e-5)
    np.testing.assert_allclose(measurements['kl/random'], np.mean(kls[1:]), rtol=1e-5)
    self.assertNotIn('kl/level1', measurements)

  def test_settings_check_max_shortening_against_the_network(self):
    with self.assertRaisesRegex(Exception, 'max_shortening'):
      method_config.read({'name': 'sandwich', 'max_shortening': (1, 2)}).check_stage_sizes(
          'method', (3, 3, 3))


class BaselineAndStochasticDepthTest(parameterized.TestCase):

  def test_baseline_gradient(self):
    model, batch, variables = _setup()
    method = _method(model, name='baseline', label_smoothing=0.0)
    grads, (_, _, measurements) = method.gradients(
        variables['params'], variables['batch_stats'], batch, jax.random.key(0), {})

    def reference(params):
      return _ce(_forward(model, params, variables['batch_stats'], batch['images'])[0],
                 batch['labels'])

    want_loss, want_grads = jax.jit(jax.value_and_grad(reference))(variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-6)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-6)

  def _stochastic_depth_step(self, key, **fields):
    """(model, batch, variables, method, grads, keep mask, survival) of one SD step, after
    checking that the step ran the mask drawn from its key."""
    model, batch, variables = _setup()
    method = _method(model, name='stochastic_depth', final_survival=0.5, **fields)
    grads, _ = method.gradients(variables['params'], variables['batch_stats'], batch, key, {})
    survival = masks.stochastic_depth_survival(6, 0.5)
    keep = masks.sample_stochastic_depth(key, survival)
    np.testing.assert_array_equal(method.masks_run(key), keep[None])
    return model, batch, variables, method, grads, keep, survival

  def test_stochastic_depth_trains_the_sampled_mask_unscaled(self):
    # Test-time scaling: SurvivalScalingTest.
    model, batch, variables, _, grads, keep, _ = self._stochastic_depth_step(
        jax.random.key(4), rule='linear')

    def reference(params):
      return _ce(_forward(model, params, variables['batch_stats'], batch['images'], keep)[0],
                 batch['labels'])

    chex.assert_trees_all_close(grads, jax.grad(reference)(variables['params']), atol=1e-6)

  def test_stochastic_depth_inverted_mode(self):
    # test_scaling=False: kept branches scaled by 1/p_i in training, the plain network at test.
    model, batch, variables, method, grads, keep, survival = self._stochastic_depth_step(
        jax.random.key(9), test_scaling=False)

    def reference(params, scale):
      (logits, _), _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   batch['images'], keep_mask=keep, train=True,
                                   residual_scale=scale, mutable=['batch_stats'])
      return _ce(logits, batch['labels'])

    chex.assert_trees_all_close(grads, jax.grad(reference)(variables['params'], 1.0 / survival),
                                atol=1e-6)
    unscaled = jax.grad(reference)(variables['params'], None)
    self.assertGreater(max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(grads), jax.tree.leaves(unscaled))), 1e-4)
    plain = model.apply(variables, batch['images'], train=False)[0]
    np.testing.assert_array_equal(method.predict(variables, batch['images']), plain)

  def test_stochastic_depth_keep_rate(self):
    model, batch, variables = _setup()
    method = _method(model, name='stochastic_depth', final_survival=0.5)

    @jax.jit
    def step(key):
      measurements = method.gradients(variables['params'], variables['batch_stats'], batch,
                                      key, {})[1][2]
      return measurements['kept_fraction'], method.masks_run(key)[0]

    num = 200
    rates, kept = map(np.asarray, zip(*[step(jax.random.key(i)) for i in range(num)]))
    np.testing.assert_allclose(rates, kept.mean(-1), atol=1e-7)
    # Block i of 6 is kept w.p. p_i = 1 - (i / 6) * 0.5, independently: each block's keep
    # frequency over the steps, and the mean kept fraction (mean p_i = 51/72, variance
    # sum p_i (1 - p_i) / 36 per step), within 4 binomial standard deviations.
    survival = 1 - np.arange(1, 7) / 6 * 0.5
    for i, p in enumerate(survival):
      self.assertAlmostEqual(kept[:, i].mean(), p, delta=4 * np.sqrt(p * (1 - p) / num),
                             msg=f'block {i + 1}')
    self.assertAlmostEqual(rates.mean(), 51 / 72,
                           delta=4 * np.sqrt(np.sum(survival * (1 - survival)) / 36 / num))


class LayerDropTest(parameterized.TestCase):

  def test_step_trains_the_sampled_blocks_unscaled(self):
    model, batch, variables = _setup()
    method = _method(model, name='layerdrop', drop_rate=0.5)
    key = jax.random.key(11)
    grads, (_, _, measurements) = method.gradients(variables['params'],
                                                   variables['batch_stats'], batch, key, {})
    survival = np.array([1, 0.5, 0.5, 1, 0.5, 0.5], np.float32)  # stage-first blocks stay
    np.testing.assert_array_equal(method.survival, survival)
    keep = masks.sample_stochastic_depth(key, survival)
    np.testing.assert_array_equal(method.masks_run(key), keep[None])
    self.assertAlmostEqual(float(measurements['kept_fraction']), float(np.mean(keep)))

    def reference(params):
      return _ce(_forward(model, params, variables['batch_stats'], batch['images'], keep)[0],
                 batch['labels'])

    chex.assert_trees_all_close(grads, jax.grad(reference)(variables['params']), atol=1e-6)
    # Test time: the plain network, and subnets unscaled.
    np.testing.assert_array_equal(method.predict(variables, batch['images']),
                                  model.apply(variables, batch['images'], train=False)[0])
    pruned = jnp.asarray(masks.pruned_every_other((3, 3)))
    np.testing.assert_array_equal(
        method.subnet_logits(variables, batch['images'], pruned),
        model.apply(variables, batch['images'], keep_mask=pruned, train=False)[0])

  def test_keep_rates(self):
    model, _, _ = _setup()
    for drop_stage_first, want in ((False, [1, 0.8, 0.8, 1, 0.8, 0.8]), (True, [0.8] * 6)):
      method = _method(model, name='layerdrop', drop_stage_first=drop_stage_first)
      kept = np.asarray(jax.jit(jax.vmap(lambda k, m=method: m.masks_run(k)[0]))(
          jax.random.split(jax.random.key(0), 4000)))
      for i, p in enumerate(want):
        self.assertAlmostEqual(kept[:, i].mean(), p, delta=5 * np.sqrt(p * (1 - p) / 4000),
                               msg=f'block {i}, drop_stage_first={drop_stage_first}')
    with self.assertRaisesRegex(Exception, 'drop_rate'):
      method_config.read({'name': 'layerdrop', 'drop_rate': 1.0})


class DropPathTest(parameterized.TestCase):
  """Stochastic depth with granularity='example': per-example keep bits as residual scales."""

  @parameterized.parameters(False, True)
  def test_step_trains_the_per_example_bits(self, test_scaling):
    model, batch, variables = _setup()
    method = _method(model, name='stochastic_depth', final_survival=0.5,
                     granularity='example', test_scaling=test_scaling)
    key = jax.random.key(7)
    grads, (_, _, measurements) = method.gradients(variables['params'],
                                                   variables['batch_stats'], batch, key, {})
    survival = masks.stochastic_depth_survival(6, 0.5)
    bits = masks.sample_drop_path(key, survival, 8)
    self.assertGreater(len({tuple(row) for row in np.asarray(bits)}), 1)
    scale = bits.astype(jnp.float32) / (1.0 if test_scaling else survival)

    def reference(params):
      (logits, _), _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   batch['images'], train=True, residual_scale=scale,
                                   mutable=['batch_stats'])
      return _ce(logits, batch['labels'])

    chex.assert_trees_all_close(grads, jax.grad(reference)(variables['params']), atol=1e-6)
    np.testing.assert_allclose(measurements['kept_fraction'], np.mean(bits), atol=1e-7)
    # Every block runs for the batch: the pass's mask is the full network's.
    np.testing.assert_array_equal(method.masks_run(key), np.ones((1, 6), bool))
    self.assertTrue(method.per_device_randomness)

  @parameterized.parameters('resnet8', 'vit_ti', 'wrn16_4')
  def test_per_example_scale_is_each_example_on_its_own(self, arch):
    model = models.build_model(arch, 5, **({'patch_size': 4} if arch == 'vit_ti' else {}))
    images = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    scale = jax.random.uniform(jax.random.key(2), (3, model.num_blocks))
    batched = model.apply(variables, images, train=False, residual_scale=scale)[0]
    for b in range(3):
      alone = model.apply(variables, images[b:b + 1], train=False, residual_scale=scale[b])[0]
      np.testing.assert_allclose(batched[b:b + 1], alone, atol=1e-5, err_msg=f'example {b}')

  def test_default_config_leaves_granularity_out(self):
    self.assertNotIn('granularity', method_config.defaults('stochastic_depth'))
    self.assertEqual(method_config.read({'name': 'stochastic_depth'}).granularity, 'batch')
    with self.assertRaisesRegex(Exception, 'granularity'):
      method_config.read({'name': 'stochastic_depth', 'granularity': 'token'})


class SurvivalScalingTest(parameterized.TestCase):
  """Stochastic depth's scaling by p strictly between 0 and 1, against networks whose
  residual branches are scaled in their weights (`_scale_branches`) and run plainly: no keep
  mask, no residual_scale, survival probabilities written out by hand."""

  def _method_and_survival(self, model, test_scaling, rule):
    method = _method(model, name='stochastic_depth', final_survival=0.3, rule=rule,
                     test_scaling=test_scaling)
    survival = _linear_survival(6, 0.3) if rule == 'linear' else np.full(6, 0.3)
    self.assertTrue(np.all((survival > 0) & (survival < 1)))
    return method, survival

  @parameterized.parameters('linear', 'uniform')
  def test_test_time_network_is_shortcut_plus_survival_times_branch(self, rule):
    model, batch, variables = _setup()
    method, survival = self._method_and_survival(model, True, rule)
    images = batch['images']

    def scaled_network(factors):
      return model.apply({'params': _scale_branches(variables['params'], (3, 3), factors),
                          'batch_stats': variables['batch_stats']}, images, train=False)[0]

    want = scaled_network(survival)
    plain = model.apply(variables, images, train=False)[0]
    self.assertGreater(float(jnp.max(jnp.abs(want - plain))), 0.05)  # scaling shows
    np.testing.assert_allclose(method.predict(variables, images), want, atol=1e-5, rtol=1e-5,
                               err_msg='predict is not relu(shortcut + p_i * branch_i)')
    np.testing.assert_allclose(method.subnet_logits(variables, images, jnp.ones(6, bool)),
                               want, atol=1e-5, rtol=1e-5)
    # A subnet: dropped blocks (a downsampling one among them) output their shortcut, kept
    # ones shortcut + p_i * branch.
    keep = np.array([True, False, True, False, True, True])
    np.testing.assert_allclose(
        method.subnet_logits(variables, images, jnp.asarray(keep)),
        scaled_network(keep * survival), atol=1e-5, rtol=1e-5,
        err_msg='subnet_logits is not relu(shortcut + keep_i * p_i * branch_i)')

  def test_inverted_variant_trains_kept_branches_scaled_by_inverse_survival(self):
    model, batch, variables = _setup()
    method, survival = self._method_and_survival(model, False, 'linear')
    key = jax.random.key(11)
    grads, (_, _, measurements) = method.gradients(
        variables['params'], variables['batch_stats'], batch, key, {})
    keep = np.asarray(method.masks_run(key)[0])
    self.assertTrue(0 < keep.sum() < 6)  # kept and dropped blocks both

    def reference(params):
      (logits, _), _ = model.apply(
          {'params': _scale_branches(params, (3, 3), keep / survival),
           'batch_stats': variables['batch_stats']}, batch['images'], train=True,
          mutable=['batch_stats'])
      return _ce(logits, batch['labels'])

    want_loss, want_grads = jax.value_and_grad(reference)(variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5,
                               err_msg='the step is not relu(shortcut + branch_i / p_i)')
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    # At test time the plain network, masked subnets unscaled.
    subnet = np.array([True, True, False, True, False, True])
    np.testing.assert_allclose(
        method.subnet_logits(variables, batch['images'], jnp.asarray(subnet)),
        model.apply({'params': _scale_branches(variables['params'], (3, 3), subnet * 1.0),
                     'batch_stats': variables['batch_stats']}, batch['images'],
                    train=False)[0], atol=1e-5, rtol=1e-5)

  def test_block_output_from_its_shortcut_and_branch(self):
    # One stage of one block, then a downsampling block with the parameter-free shortcut:
    # each block's output rebuilt from the block's input (the features), its branch run as
    # a module on its own weights, and the shortcut by hand in numpy.
    model = ResNet(stage_sizes=(1, 1), stage_widths=(4, 8), num_classes=3, stem_width=4,
                   shortcut='pad')
    images = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    variables = model.init(jax.random.key(4), images, train=False)
    branch = lambda name, width, stride, x: np.asarray(BasicBranch(
        width, stride, 'xla', 0.9, jnp.float32).apply(
            {'params': variables['params'][name]['branch'],
             'batch_stats': variables['batch_stats'][name]['branch']}, x, False))
    scale = np.array([0.7, 0.4])
    for keep in ([True, True], [True, False], [False, True]):
      _, features = model.apply(variables, images, keep_mask=jnp.asarray(keep),
                                residual_scale=jnp.asarray(scale), train=False)
      stem, stage1 = np.asarray(features['stem']), np.asarray(features['stage1'])
      want1 = np.maximum(stem + keep[0] * scale[0] * branch('stage1_block1', 4, 1, stem), 0)
      np.testing.assert_allclose(stage1, want1, atol=1e-5, err_msg=f'block 1, keep {keep}')
      shortcut = np.pad(stage1[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
      want2 = np.maximum(
          shortcut + keep[1] * scale[1] * branch('stage2_block1', 8, 2, stage1), 0)
      np.testing.assert_allclose(features['stage2'], want2, atol=1e-5,
                                 err_msg=f'block 2, keep {keep}')


class RegistryTest(parameterized.TestCase):

  @parameterized.parameters(
      (dict(name='gkd'), "method.name='gkd'"),
      (dict(name='gkt', sampler='uniform'), "method.sampler='uniform'"),
      (dict(name='gkt', levels=0), 'method.levels=0'),
      (dict(name='gkt', aggregate='max'), "method.aggregate='max'"),
      (dict(name='stimulative', n_sub=0), 'method.n_sub=0'),
  )
  def test_bad_config(self, fields, message):
    model, _, _ = _setup()
    with self.assertRaisesRegex(ValueError, message):
      _method(model, **fields)


if __name__ == '__main__':
  absltest.main()
