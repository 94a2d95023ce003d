"""Tests for gkt_jax.losses against numpy references and hand-computed values."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np

from gkt_jax import losses

LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, -1.0, 0.5]], np.float32)
LABELS = np.array([2, 0, 1], np.int32)


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_attention_map(features):
  attention = np.asarray(features, np.float64).sum(-1)
  flat = attention.reshape(len(attention), -1)
  mean = flat.mean(-1, keepdims=True)
  std = flat.std(-1, ddof=1, keepdims=True)
  return ((flat - mean) / (std + 1e-6)).reshape(attention.shape)


class CrossEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    # Row 0, label 2: log(e^1 + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2). Row 1 (uniform):
    # log 3. Row 2, label 1: log(e^4 + e^-1 + e^0.5) + 1.
    expected = [np.log(1 + np.exp(-1) + np.exp(-2)), np.log(3.0),
                np.log(np.exp(4) + np.exp(-1) + np.exp(0.5)) + 1.0]
    ce = self.variant(losses.cross_entropy)(LOGITS, LABELS)
    self.assertEqual(ce.shape, (3,))
    self.assertEqual(ce.dtype, jnp.float32)
    np.testing.assert_allclose(ce, expected, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.1, 0.3, 1.0)
  def test_label_smoothing_vs_numpy(self, smoothing):
    targets = (1 - smoothing) * np.eye(3)[LABELS] + smoothing / 3
    expected = -(targets * _np_log_softmax(LOGITS)).sum(-1)
    ce = self.variant(losses.cross_entropy)(LOGITS, LABELS, smoothing)
    np.testing.assert_allclose(ce, expected, atol=1e-6)

  def test_smoothing_of_uniform_logits(self):
    # Uniform logits: every target distribution gives CE = log C.
    np.testing.assert_allclose(
        losses.cross_entropy(np.zeros((2, 4)), np.array([0, 3]), 0.2), [np.log(4)] * 2,
        atol=1e-6)

  def test_bad_smoothing(self):
    with self.assertRaisesRegex(ValueError, r'label_smoothing=1.5.*\[0, 1\]'):
      losses.cross_entropy(LOGITS, LABELS, 1.5)

  @parameterized.parameters(0.0, 0.1)
  def test_grads(self, smoothing):
    check_grads(lambda z: losses.cross_entropy(z, LABELS, smoothing), (LOGITS,), order=2,
                modes=('rev',))


class DistillationKLTest(chex.TestCase):

  @parameterized.parameters(0, 0.0, -1)
  def test_temperature_must_be_positive(self, temperature):
    with self.assertRaisesRegex(ValueError, rf'temperature={temperature!r}: must be > 0'):
      losses.distillation_kl(LOGITS, LOGITS, temperature)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1.0, 2.0, 4.0)
  def test_vs_numpy(self, temperature):
    teacher = np.array([[0.5, 2.0, -1.0], [3.0, 3.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    log_p = _np_log_softmax(teacher / temperature)
    log_q = _np_log_softmax(LOGITS / temperature)
    expected = temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)
    kl = self.variant(losses.distillation_kl)(LOGITS, teacher, temperature)
    self.assertEqual(kl.shape, (3,))
    np.testing.assert_allclose(kl, expected, atol=1e-6)

  def test_hand_values(self):
    # Teacher [log 3, 0] -> p = (3/4, 1/4); student [0, 0] -> q = (1/2, 1/2).
    # KL = 3/4 log(3/2) + 1/4 log(1/2).
    kl = losses.distillation_kl(jnp.zeros((1, 2)), jnp.array([[np.log(3.0), 0.0]]))
    np.testing.assert_allclose(kl, [0.75 * np.log(1.5) + 0.25 * np.log(0.5)], atol=1e-6)
    # T = 2 scales logits by 1/2 and the loss by 4: teacher [2 log 3, 0] gives the same p.
    kl = losses.distillation_kl(jnp.zeros((1, 2)), jnp.array([[2 * np.log(3.0), 0.0]]), 2.0)
    np.testing.assert_allclose(kl, [4 * (0.75 * np.log(1.5) + 0.25 * np.log(0.5))], atol=1e-5)

  def test_zero_when_equal_and_stable(self):
    np.testing.assert_allclose(losses.distillation_kl(LOGITS, LOGITS), np.zeros(3), atol=1e-6)
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    # Teacher p = one_hot(2); the student's log q_2 = -1000 - 1000: KL = 2000.
    kl = losses.distillation_kl(big, big[:, ::-1])
    self.assertTrue(np.isfinite(kl).all())
    np.testing.assert_allclose(kl, [2000.0], rtol=1e-6)

  def test_grads_reach_both_sides(self):
    teacher = jnp.array([[0.5, 2.0, -1.0], [3.0, 3.0, 0.0], [1.0, 2.0, 3.0]])
    check_grads(lambda s, t: losses.distillation_kl(s, t, 2.0), (LOGITS, teacher), order=2,
                modes=('rev',))
    teacher_grad = jax.grad(lambda t: losses.distillation_kl(LOGITS, t).sum())(teacher)
    self.assertGreater(float(jnp.abs(teacher_grad).max()), 1e-3)


class NormalizeLogitsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    # [1, 2, 3]: mean 2, variance 2/3. Uniform logits: 0.
    out = self.variant(losses.normalize_logits)(LOGITS[:2])
    np.testing.assert_allclose(
        out, [np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3 + 1e-7), [0.0, 0.0, 0.0]], atol=1e-6)

  def test_vs_numpy(self):
    z = np.asarray(jax.random.normal(jax.random.key(0), (4, 5, 7)))
    expected = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(losses.normalize_logits(z, eps=1e-3), expected, atol=1e-5)

  def test_grads(self):
    check_grads(losses.normalize_logits, (LOGITS[::2],), order=2, modes=('rev',))


class AttentionMapTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    # Channel sums [[1, 2], [3, 6]]: mean 3, unbiased std sqrt((4 + 1 + 0 + 9) / 3).
    features = np.array([[[[1.0, 0.0], [1.0, 1.0]], [[2.0, 1.0], [3.0, 3.0]]]], np.float32)
    std = np.sqrt(14 / 3)
    out = self.variant(losses.attention_map)(features)
    self.assertEqual(out.shape, (1, 2, 2))
    np.testing.assert_allclose(out, [[[-2 / std, -1 / std], [0.0, 3 / std]]], atol=1e-5)

  def test_eps_and_channel_sum_on_small_maps(self):
    # Channel sums 1e-6 * [[-1, 1], [-1, 1]] (each the sum of two channels): mean 0,
    # unbiased std sqrt(4e-12 / 3); eps = 1e-6 is not negligible there.
    half = 0.5e-6 * np.array([[-1.0, 1.0], [-1.0, 1.0]], np.float32)
    features = np.stack([half, half], -1)[None]
    value = 1e-6 / (np.sqrt(4e-12 / 3) + 1e-6)
    np.testing.assert_allclose(losses.attention_map(features),
                               [[[-value, value], [-value, value]]], atol=1e-5)
    value = 1e-6 / (np.sqrt(4e-12 / 3) + 1e-5)
    np.testing.assert_allclose(losses.attention_map(features, eps=1e-5),
                               [[[-value, value], [-value, value]]], atol=1e-5)

  @parameterized.parameters((2, 3, 3, 4), (3, 4, 2, 1), (1, 1, 5, 2))
  def test_vs_numpy(self, *shape):
    features = jax.random.normal(jax.random.key(1), shape)
    out = losses.attention_map(features)
    np.testing.assert_allclose(out, _np_attention_map(features), atol=1e-5)
    # Unbiased standardisation: mean 0, std (ddof=1) 1 per example.
    flat = np.asarray(out).reshape(shape[0], -1)
    np.testing.assert_allclose(flat.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(-1, ddof=1), 1.0, atol=1e-5)

  @parameterized.named_parameters(
      ('one_by_one', (2, 1, 1, 3), 'random'),
      ('one_by_one_const', (2, 1, 1, 3), 'constant'),
      ('two_by_two_const', (2, 2, 2, 3), 'constant'),
  )
  def test_degenerate_maps_are_zero_with_finite_grads(self, shape, kind):
    if kind == 'random':
      features = jax.random.normal(jax.random.key(2), shape)
    else:
      features = jnp.full(shape, 0.7)
    out = losses.attention_map(features)
    np.testing.assert_array_equal(out, np.zeros(shape[:3]))
    cotangent = jax.random.normal(jax.random.key(3), shape[:3])
    grads = jax.grad(lambda f: jnp.sum(losses.attention_map(f) * cotangent))(features)
    self.assertTrue(np.isfinite(grads).all(), grads)
    hessian_vector = jax.grad(lambda f: jnp.sum(jax.grad(
        lambda g: jnp.sum(losses.attention_map(g) * cotangent))(f)))(features)
    self.assertTrue(np.isfinite(hessian_vector).all(), hessian_vector)

  @parameterized.parameters((2, 2, 2, 3), (1, 3, 2, 2))
  def test_grads(self, *shape):
    features = jax.random.normal(jax.random.key(4), shape)
    check_grads(losses.attention_map, (features,), order=1, modes=('rev',))

  def test_bad_rank(self):
    with self.assertRaisesRegex(ValueError, r'\[B, H, W, C\]'):
      losses.attention_map(jnp.zeros((2, 3, 3)))


class EnsembleAndAccuracyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_ensemble_logits(self):
    path_logits = jnp.array([[[1.0, 2.0]], [[3.0, -2.0]], [[5.0, 3.0]]])  # [P=3, B=1, C=2]
    out = self.variant(losses.ensemble_logits)(path_logits)
    self.assertEqual(out.shape, (1, 2))
    np.testing.assert_allclose(out, [[3.0, 1.0]], atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_accuracy(self):
    logits = jnp.array([[1.0, 2.0, 3.0], [4.0, -1.0, 0.5], [0.2, 0.9, 0.1], [0.0, 5.0, 1.0]])
    out = self.variant(losses.accuracy)(logits, jnp.array([2, 2, 1, 0]))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0, 0.0])


if __name__ == '__main__':
  absltest.main()
