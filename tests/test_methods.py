"""Methods: gradients against hand-assembled reference losses of the specs' pseudo-code."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest, parameterized

from gkt_jax import masks, methods
from gkt_jax.models import ResNet


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


class SelfDistillationTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(levels=3, loops=2, aggregate='ema', sampler='bernoulli', temperature=1.0),
      dict(levels=2, loops=3, aggregate='mean', sampler='geometric', temperature=2.0),
      dict(levels=1, loops=1, aggregate='ema', sampler='bernoulli', temperature=1.0),
  )
  def test_gkt_gradients_equal_reference(self, levels, loops, aggregate, sampler, temperature):
    model, batch, variables = _setup()
    method = _method(model, name='gkt', levels=levels, loops=loops, aggregate=aggregate,
                     momentum=0.3, sampler=sampler, drop_prob=0.4, temperature=temperature,
                     kl_weight=0.7)
    key = jax.random.key(5)
    grads, (stats, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, key, {})
    subnet_masks = method.sample_masks(jax.random.split(key)[0])
    self.assertEqual(subnet_masks.shape, (levels * loops, 6))
    np.testing.assert_array_equal(measurements['masks_run'][1:], subnet_masks)

    def reference(params):
      return _reference_gkt(model, params, variables['batch_stats'], batch, subnet_masks,
                            levels, loops, 0.3, aggregate, temperature, 0.7)

    (want_loss, want_stats), want_grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        variables['params'])
    np.testing.assert_allclose(measurements['loss'], want_loss, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    chex.assert_trees_all_close(stats, want_stats, atol=1e-5, rtol=1e-5)
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

  def test_subnet_resize(self):
    model, batch, variables = _setup(side=16)
    method = _method(model, name='stimulative', n_sub=4, subnet_resize=True,
                     resize_min_scale=0.5, resize_buckets=3)
    self.assertEqual(method.resize_sizes(16), (8, 12, 16))
    grads, (_, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, jax.random.key(0), {})
    self.assertTrue(all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)))
    self.assertTrue(np.isfinite(float(measurements['loss'])))

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

  def test_stochastic_depth_uses_sampled_mask_and_scales_at_test(self):
    model, batch, variables = _setup()
    method = _method(model, name='stochastic_depth', final_survival=0.5, rule='linear')
    key = jax.random.key(4)
    grads, (_, _, measurements) = method.gradients(
        variables['params'], variables['batch_stats'], batch, key, {})
    survival = masks.stochastic_depth_survival(6, 0.5)
    keep = masks.sample_stochastic_depth(key, survival)
    np.testing.assert_array_equal(measurements['masks_run'][0], keep)

    def reference(params):
      return _ce(_forward(model, params, variables['batch_stats'], batch['images'], keep)[0],
                 batch['labels'])

    chex.assert_trees_all_close(grads, jax.grad(reference)(variables['params']), atol=1e-6)
    want = model.apply(variables, batch['images'], train=False, residual_scale=survival)[0]
    np.testing.assert_allclose(method.predict(variables, batch['images']), want, atol=1e-6)

  def test_stochastic_depth_keep_rate(self):
    model, batch, variables = _setup()
    method = _method(model, name='stochastic_depth', final_survival=0.5)
    step = jax.jit(lambda k: method.gradients(variables['params'], variables['batch_stats'],
                                              batch, k, {})[1][2]['kept_fraction'])
    rates = [float(step(jax.random.key(i))) for i in range(200)]
    # mean of 1 - (i/6) * 0.5 over i = 1..6 is 0.7083; std of the mean ~ 0.013.
    self.assertAlmostEqual(np.mean(rates), 0.7083, delta=0.06)


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
