"""Per-example losses and metrics; the caller reduces (mean, or a masked mean).

Computations run in at least float32 (bfloat16 inputs are promoted). Nothing here stops
gradients: a teacher that must not be trained is passed through `jax.lax.stop_gradient` by
the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy against integer labels, optionally label-smoothed.

  Args:
    logits: f32[B, C].
    labels: int[B], class indices in [0, C). Not checkable under jit: a label >= C gives
      NaN (no label smoothing) or a wrong value, a negative one wraps around (-1 is C - 1).
    label_smoothing: ls in [0, 1]; the targets are (1 - ls) * one_hot(labels) + ls / C.
      A Python number is checked; a traced value is not.

  Returns:
    f32[B], -sum_c target_c * log_softmax(logits)_c.
  """
  logits = _as_float(logits)
  if isinstance(label_smoothing, (int, float)):
    if not 0.0 <= label_smoothing <= 1.0:
      raise ValueError(f'label_smoothing={label_smoothing!r} is outside the allowed interval '
                       '[0, 1]')
    if label_smoothing == 0:
      return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.losses.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
  return optax.losses.softmax_cross_entropy(logits, targets)


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array,
                    temperature: float = 1.0) -> jax.Array:
  """Temperature-scaled distillation loss T^2 * KL(teacher || student).

  Args:
    student_logits: f32[B, C].
    teacher_logits: f32[B, C]; gradients flow into it too (no stop_gradient here).
    temperature: T > 0 (a Python number is checked; a traced T <= 0 gives NaN or nonsense).

  Returns:
    f32[B], T^2 * sum_c p_c (log p_c - log q_c) with p = softmax(teacher / T) and
    q = softmax(student / T), computed from log_softmax.
  """
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f'temperature={temperature!r}: must be > 0')
  log_student = jax.nn.log_softmax(_as_float(student_logits) / temperature, axis=-1)
  log_teacher = jax.nn.log_softmax(_as_float(teacher_logits) / temperature, axis=-1)
  kl = optax.losses.kl_divergence_with_log_targets(log_student, log_teacher)
  return temperature**2 * kl


def normalize_logits(logits: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Parameter-free layer norm over the class axis (ST++).

  Args:
    logits: f32[..., C].
    eps: added to the variance.

  Returns:
    f32[..., C], (z - mean(z)) / sqrt(var(z) + eps), mean and (biased) variance over C.
  """
  logits = _as_float(logits)
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  var = jnp.var(logits, axis=-1, keepdims=True)
  return (logits - mean) * jax.lax.rsqrt(var + eps)


def attention_map(features: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Standardised spatial attention map of a feature map.

  Args:
    features: f32[B, H, W, C].
    eps: added to the standard deviation.

  Returns:
    f32[B, H, W]: a = sum_c features, then per example (a - mean(a)) / (std(a) + eps), with
    mean and unbiased (ddof=1) std over the H * W positions. Finite, with finite gradients,
    for constant maps (the result is 0 there) and for H * W == 1 (the result is 0).
  """
  features = _as_float(features)
  if features.ndim != 4:
    raise ValueError(f'features has shape {features.shape}; expected [B, H, W, C]')
  attention = jnp.sum(features, axis=-1)
  num_positions = attention.shape[1] * attention.shape[2]
  centered = attention - jnp.mean(attention, axis=(1, 2), keepdims=True)
  if num_positions == 1:
    return centered  # Exactly 0, with gradient 0.
  var = jnp.sum(centered**2, axis=(1, 2), keepdims=True) / (num_positions - 1)
  # sqrt has an infinite derivative at 0: route constant maps around it.
  positive = var > 0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  return centered / (std + eps)


def ensemble_logits(path_logits: jax.Array) -> jax.Array:
  """Ensemble of P predictors.

  Args:
    path_logits: f32[P, B, C].

  Returns:
    f32[B, C], the mean over axis 0.
  """
  return jnp.mean(_as_float(path_logits), axis=0)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example top-1 correctness.

  Args:
    logits: f32[B, C].
    labels: int[B].

  Returns:
    f32[B], 1.0 where argmax(logits) == label, else 0.0.
  """
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def ensemble_distillation_loss(path_logits: jax.Array, labels: jax.Array, *,
                               path_features: jax.Array | None = None,
                               temperature: float = 3.0, kd_weight: float = 1.0,
                               att_weight: float = 1.0, label_smoothing: float = 0.0,
                               detach_teacher: bool = False,
                               attention_eps: float = 1e-6) -> dict[str, jax.Array]:
  """EKD-FWSNet's loss (docs/methods/ekd_fwsnet.md): paths teach their first one (the main path).

  With z_0 the main path's logits and z_1..z_{P-1} the classmates',
    loss = CE(z_0) + mean_{b>=1} CE(z_b)
           + kd_weight * T^2 KL(softmax(z_ens / T) || softmax(z_0 / T))
           + att_weight * mean_{h,w} (A_0 - A_ens)^2,
  where z_ens = mean_b z_b and A_ens = mean_b A_b over all P paths (the main one included),
  and A_b = attention_map(path_features[b]).

  Args:
    path_logits: f32[P, B, C], the main path first; P >= 2.
    labels: int[B].
    path_features: f[P, B, H, W, C], each path's final feature map; None (or att_weight 0):
      no attention term.
    temperature, kd_weight, att_weight, label_smoothing: as in the formula above.
    detach_teacher: stop gradients through z_ens and A_ens (the authors' code does not).
    attention_eps: added to each attention map's standard deviation (`attention_map`'s eps;
      the authors' code adds nothing, which is 0 here).

  Returns:
    A dict of per-example values: 'loss' f32[B], 'ce' f32[P, B] (each path's cross-entropy),
    'kd' f32[B] and 'att' f32[B] (unweighted; zeros without the attention term).
  """
  path_logits = _as_float(path_logits)
  if path_logits.ndim != 3 or path_logits.shape[0] < 2:
    raise ValueError(f'path_logits has shape {path_logits.shape}; expected [P >= 2, B, C]')
  ce = jax.vmap(lambda z: cross_entropy(z, labels, label_smoothing))(path_logits)
  teacher = ensemble_logits(path_logits)
  if detach_teacher:
    teacher = jax.lax.stop_gradient(teacher)
  kd = distillation_kl(path_logits[0], teacher, temperature)
  att = jnp.zeros_like(kd)
  if path_features is not None and att_weight:
    maps = jax.vmap(lambda f: attention_map(f, attention_eps))(path_features)  # [P, B, H, W]
    mean_map = jnp.mean(maps, axis=0)
    if detach_teacher:
      mean_map = jax.lax.stop_gradient(mean_map)
    att = jnp.mean((maps[0] - mean_map) ** 2, axis=(1, 2))
  loss = ce[0] + jnp.mean(ce[1:], axis=0) + kd_weight * kd + att_weight * att
  return {'loss': loss, 'ce': ce, 'kd': kd, 'att': att}
