"""Subnets distilled from knowledge, run one after another in a `lax.scan`.

Shared by stimulative training (one level: every subnet learns from the full network) and
GKT (G nested levels: the aggregated knowledge of level g-1 teaches level g). The scan body
is one subnet's forward and backward; its gradients are added to the carry, so the compiled
step holds one subnet pass whatever the number of subnets.

BatchNorm running statistics (`method.bn_stats`, one of BN_STATS): every train-mode pass
normalises with its own batch statistics; what differs is which passes update the running
statistics that evaluation uses.
- 'every_pass': the full network's pass, then every subnet's in running order, as the
  authors' PyTorch loops do (stimulative training's released code; GKT builds on it). With
  K subnets after the full network at momentum 0.9, the full network's batch enters the
  running statistics with weight 0.1 * 0.9^K against 1 - 0.9^(K + 1) for the whole step:
  about 10% for GKT's default K = 6, 47% for ST's K = 1.
- 'full_network' (default): only the full network's pass updates them, so the deployed
  network is evaluated with its own statistics; the subnets' updates are discarded.
Measured on Fashion-MNIST (docs/results.md, shared notes bn_running_stats.md): with
'every_pass' GKT's full network lost 2.7 points that recalibrating its statistics restored.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import jax
import jax.numpy as jnp

from gkt_jax import groups, losses
from gkt_jax.methods.base import MethodSettings, run_model
from gkt_jax.settings import boolean, integer, interval, non_negative, one_of, positive, setting

BN_STATS = ('full_network', 'every_pass')


def distill_subnets(model, params, batch_stats, images, labels, teacher_logits, subnet_masks,
                    *, levels: int, aggregate: str = 'ema', momentum: float = 0.5,
                    temperature: float = 1.0, kl_weight: float = 1.0,
                    label_weight: float = 0.0, label_smoothing: float = 0.0,
                    normalize: bool = False, input_sizes: Sequence[int] | None = None,
                    size_index: jax.Array | None = None):
  """Trains K subnets against group knowledge; returns their summed gradients.

  Args:
    model: the masked ResNet.
    params, batch_stats: its variables.
    images: f32[B, H, W, C], the step's augmented batch.
    labels: int32[B].
    teacher_logits: f32[B, C], knowledge of level 0 (the full network); the caller passes it
      through `stop_gradient` (and `normalize_logits` when `normalize`).
    subnet_masks: bool[K, L] in running order; subnet i is at level `i % levels + 1` of
      sampling loop `i // levels`.
    levels: G, the number of nested levels per loop (1 for stimulative training).
    aggregate, momentum: how a level's knowledge aggregates over loops
      (`groups.update_group_knowledge`).
    temperature, kl_weight: the distillation term, kl_weight * T^2 KL(teacher || subnet).
    label_weight, label_smoothing: an optional cross-entropy term on each subnet.
    normalize: apply `losses.normalize_logits` to subnet logits before both terms (ST++).
    input_sizes: optional static square sizes; subnet i then sees `images` bilinearly
      resized to `input_sizes[size_index[i]]` (ST++ 'subnet_resize').
    size_index: int32[K], required with input_sizes.

  Returns:
    grads (a params-shaped sum over subnets of d(loss_i)/d(params)), the updated batch
    statistics, and a dict of f32[K] per-subnet values: 'loss', 'kl', 'ce', 'acc', 'kept'.
  """
  num_subnets = subnet_masks.shape[0]
  if num_subnets % levels:
    raise ValueError(f'{num_subnets} subnet masks do not split into loops of {levels} levels')
  if input_sizes is not None and size_index is None:
    raise ValueError('input_sizes needs size_index')

  def subnet_loss(p, stats, keep_mask, subnet_images, teacher):
    logits, _, new_stats = run_model(model, p, stats, subnet_images, keep_mask=keep_mask)
    if normalize:
      logits = losses.normalize_logits(logits)
    kl = jnp.mean(losses.distillation_kl(logits, teacher, temperature))
    ce = jnp.mean(losses.cross_entropy(logits, labels, label_smoothing))
    loss = kl_weight * kl + (label_weight * ce if label_weight else 0.0)
    return loss, (new_stats, logits, kl, ce)

  grad_fn = jax.value_and_grad(subnet_loss, has_aux=True)

  def run_subnet(stats, keep_mask, teacher, size_i):
    if input_sizes is None:
      return grad_fn(params, stats, keep_mask, images, teacher)
    batch, _, _, channels = images.shape

    def at_size(side):
      # No antialiasing: the authors resize with F.interpolate(mode='bilinear'), which
      # samples the input at the output's pixel centres and filters nothing.
      resized = jax.image.resize(images, (batch, side, side, channels), 'bilinear',
                                 antialias=False)
      return lambda: grad_fn(params, stats, keep_mask, resized, teacher)

    return jax.lax.switch(size_i, [at_size(int(s)) for s in input_sizes])

  def body(carry, inputs):
    grad_sum, stats, knowledge = carry
    index, keep_mask, size_i = inputs
    level = index % levels + 1
    loop = index // levels
    teacher = knowledge[level - 1]
    (loss, (stats, logits, kl, ce)), grads = run_subnet(stats, keep_mask, teacher, size_i)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    updated = groups.update_group_knowledge(
        knowledge[level], jax.lax.stop_gradient(logits), loop, aggregate=aggregate,
        momentum=momentum)
    knowledge = knowledge.at[level].set(updated)
    outputs = {'loss': loss, 'kl': kl, 'ce': ce,
               'acc': jnp.mean(losses.accuracy(logits, labels)),
               'kept': jnp.mean(keep_mask.astype(jnp.float32))}
    return (grad_sum, stats, knowledge), outputs

  knowledge = jnp.zeros((levels + 1,) + teacher_logits.shape, teacher_logits.dtype)
  knowledge = knowledge.at[0].set(teacher_logits)
  zeros = jax.tree.map(jnp.zeros_like, params)
  if size_index is None:
    size_index = jnp.zeros((num_subnets,), jnp.int32)
  (grads, batch_stats, _), per_subnet = jax.lax.scan(
      body, (zeros, batch_stats, knowledge),
      (jnp.arange(num_subnets), subnet_masks, size_index))
  return grads, batch_stats, per_subnet


def per_level_measurements(per_subnet: dict[str, jax.Array], levels: int,
                           prefix: str = 'level') -> dict[str, jax.Array]:
  """Averages f32[K] per-subnet values over loops: '{name}/{prefix}{g}' for g = 1..levels."""
  out = {}
  for name, values in per_subnet.items():
    by_level = values.reshape(-1, levels).mean(axis=0)
    for g in range(levels):
      out[f'{name}/{prefix}{g + 1}'] = by_level[g]
  return out


@dataclasses.dataclass(frozen=True)
class DistillationSettings(MethodSettings):
  """The fields of subnet distillation (stimulative training, GKT)."""
  # The subnet loss: kl_weight * T^2 KL(teacher || subnet) + subnet_label_weight * CE.
  temperature: float = setting(1.0, positive)
  kl_weight: float = setting(1.0, non_negative)
  subnet_label_weight: float = setting(0.0, non_negative)
  # ST++: normalise the logits of every network before both terms.
  normalize_logits: bool = setting(False, boolean)
  # ST++: each subnet sees the batch resized to one of `resize_buckets` sides spread over
  # [resize_min_scale * side, side].
  subnet_resize: bool = setting(False, boolean)
  resize_min_scale: float = setting(0.43, interval(0.0, 1.0, low_open=True))
  resize_buckets: int = setting(4, integer(1))
  # Which passes update the BatchNorm running statistics (module docstring).
  bn_stats: str = setting('full_network', one_of(BN_STATS, 'BatchNorm statistics setting'))


class SelfDistillation:
  """Mixin for methods that train the full network with CE and subnets from its knowledge.

  Subclasses set `self.levels` and implement `sample_masks(key) -> bool[K, L]`; their
  settings extend DistillationSettings.
  """

  levels: int = 1
  aggregate: str = 'ema'
  momentum: float = 0.5

  def sample_masks(self, key) -> jax.Array:
    raise NotImplementedError

  def resize_sizes(self, image_side: int) -> tuple[int, ...] | None:
    """The static subnet input sides of ST++ 'subnet_resize', or None when it is off."""
    if not self.settings.subnet_resize:
      return None
    low = self.settings.resize_min_scale * image_side
    buckets = self.settings.resize_buckets
    return tuple(sorted({int(round(low + (image_side - low) * i / max(buckets - 1, 1)))
                         for i in range(buckets)}))

  def gradients(self, params, batch_stats, batch, key, method_state):
    config = self.settings
    normalize = config.normalize_logits
    images, labels = batch['images'], batch['labels']
    smoothing = self.label_smoothing()

    def full_loss(p):
      logits, _, new_stats = run_model(self.model, p, batch_stats, images)
      if normalize:
        logits = losses.normalize_logits(logits)
      ce = jnp.mean(losses.cross_entropy(logits, labels, smoothing))
      return ce, (new_stats, logits)

    with jax.named_scope('full_network'):  # scopes name the step's parts in profiles
      (ce, (full_stats, full_logits)), grads = jax.value_and_grad(full_loss, has_aux=True)(
          params)
    subnet_masks = self.masks_run(key)[1:]
    size_key = jax.random.split(key)[1]
    sizes = self.resize_sizes(images.shape[1])
    size_index = None
    if sizes is not None:
      size_index = jax.random.randint(size_key, (subnet_masks.shape[0],), 0, len(sizes))
    with jax.named_scope('subnets'):
      subnet_grads, subnet_stats, per_subnet = distill_subnets(
          self.model, params, full_stats, images, labels, jax.lax.stop_gradient(full_logits),
          subnet_masks, levels=self.levels, aggregate=self.aggregate, momentum=self.momentum,
          temperature=config.temperature, kl_weight=config.kl_weight,
          label_weight=config.subnet_label_weight, label_smoothing=smoothing,
          normalize=normalize, input_sizes=sizes, size_index=size_index)
    grads = jax.tree.map(jnp.add, grads, subnet_grads)
    stats = subnet_stats if config.bn_stats == 'every_pass' else full_stats
    measurements = {
        'loss': ce + jnp.sum(per_subnet['loss']),
        'ce/full': ce,
        'train_acc/full': jnp.mean(losses.accuracy(full_logits, labels)),
    }
    measurements.update(per_level_measurements(per_subnet, self.levels))
    return grads, (stats, method_state, measurements)

  def masks_run(self, key) -> jax.Array:
    """The full network, then the subnets `sample_masks` draws from the key's first half."""
    subnet_masks = self.sample_masks(jax.random.split(key)[0])
    return jnp.concatenate([jnp.ones((1, self.num_blocks), bool), subnet_masks])

  def forwards_per_step(self) -> int:
    return int(jax.eval_shape(self.masks_run, jax.random.key(0)).shape[0])
