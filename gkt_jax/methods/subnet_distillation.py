"""Subnets distilled from knowledge, run one after another in a `lax.scan`.

Shared by stimulative training (one level: every subnet learns from the full network) and
GKT (G nested levels: the aggregated knowledge of level g-1 teaches level g). The scan body
is one pass's forward and backward through the masked network, the full network's pass
(keep mask all True) first; its gradients are added to the carry, so the compiled step holds
one network pass whatever the number of subnets, and compiles in about the time of stochastic
depth's step (one masked network) rather than of two networks.

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
Measured on Fashion-MNIST (docs/results.md): with
'every_pass' GKT's full network lost 2.7 points that recalibrating its statistics restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gkt_jax import groups, losses
from gkt_jax.config.method import DistillationSettings
from gkt_jax.config.names import BN_STATS
from gkt_jax.methods.base import dropout_key, run_model
from gkt_jax.utils import with_variance_of



def _pass_gradients(model, params, images, labels, sizes, *, temperature, kl_weight,
                    label_weight, label_smoothing, normalize):
  """`run_pass(stats, keep_mask, teacher, first, size_i, dropout)` -> ((loss, (new stats,
  logits, kl, ce)), grads) of one pass of `distill_subnets` (its arguments; `sizes`: the
  static input sides a `lax.switch` picks from by `size_i`, or None; `dropout`: the pass's
  dropout key or None)."""

  def full_terms(logits, teacher):
    del teacher  # the full network learns from the labels alone
    ce = jnp.mean(losses.cross_entropy(logits, labels, label_smoothing))
    return ce, (jnp.zeros_like(ce), ce)

  def subnet_terms(logits, teacher):
    kl = jnp.mean(losses.distillation_kl(logits, teacher, temperature))
    ce = jnp.mean(losses.cross_entropy(logits, labels, label_smoothing))
    return kl_weight * kl + (label_weight * ce if label_weight else 0.0), (kl, ce)

  def pass_loss(p, stats, keep_mask, pass_images, teacher, first, dropout):
    logits, _, new_stats = run_model(model, p, stats, pass_images, keep_mask=keep_mask,
                                     dropout_key=dropout)
    if normalize:
      logits = losses.normalize_logits(logits)
    # A cond on the loss head only: the network itself is traced once.
    loss, (kl, ce) = jax.lax.cond(first, full_terms, subnet_terms, logits, teacher)
    return loss, (new_stats, logits, kl, ce)

  grad_fn = jax.value_and_grad(pass_loss, has_aux=True)
  side = images.shape[1]

  def run_pass(stats, keep_mask, teacher, first, size_i, dropout):
    if sizes is None:
      return grad_fn(params, stats, keep_mask, images, teacher, first, dropout)
    batch, _, _, channels = images.shape

    def at_size(s):
      # No antialiasing: the authors resize with F.interpolate(mode='bilinear'), which
      # samples the input at the output's pixel centres and filters nothing.
      resized = images if s == side else jax.image.resize(
          images, (batch, s, s, channels), 'bilinear', antialias=False)
      return lambda: grad_fn(params, stats, keep_mask, resized, teacher, first, dropout)

    return jax.lax.switch(size_i, [at_size(int(s)) for s in sizes])

  return run_pass


def _logits_dtype(model, params) -> jnp.dtype:
  """The dtype of the logits a pass stores as knowledge: at least float32, wider where the
  model computes or holds its weights in a wider type (float64 runs keep their teacher
  exact)."""
  return jnp.result_type(jnp.float32, getattr(model, 'dtype', jnp.float32),
                         *(leaf.dtype for leaf in jax.tree.leaves(params)))


def distill_subnets(model, params, batch_stats, images, labels, masks_run, *, levels: int,
                    aggregate: str = 'ema', momentum: float = 0.5, temperature: float = 1.0,
                    kl_weight: float = 1.0, label_weight: float = 0.0,
                    label_smoothing: float = 0.0, normalize: bool = False,
                    input_sizes: Sequence[int] | None = None,
                    size_index: jax.Array | None = None, key: jax.Array | None = None):
  """Trains the full network on the labels, then K subnets against group knowledge.

  All K + 1 passes run one after another in one `lax.scan`, so the compiled step holds one
  masked network (a full-network pass through the masked network gives the same values as
  the unmasked one). Pass 0 is the full network: cross-entropy on the labels; its detached
  logits are level 0's knowledge. Each later pass is a subnet. The gradients are added up in
  the order full + (sum over subnets), as two separate passes would.

  Args:
    model, params, batch_stats: the masked ResNet and its variables.
    images, labels: f32[B, H, W, C] (the step's augmented batch) and int32[B].
    masks_run: bool[1 + K, L] in running order: the full network (all True), then the
      subnets; subnet i (1-based) is at level `(i - 1) % levels + 1` of sampling loop
      `(i - 1) // levels`.
    levels: G, the number of nested levels per loop (1 for stimulative training).
    aggregate, momentum: how a level's knowledge aggregates over loops
      (`groups.update_group_knowledge`).
    temperature, kl_weight: the distillation term, kl_weight * T^2 KL(teacher || subnet).
    label_weight, label_smoothing: a cross-entropy term on each subnet; the smoothing of
      every cross-entropy term.
    normalize: `losses.normalize_logits` on every network's logits before its terms and
      before they become knowledge (ST++).
    input_sizes, size_index: optional static square sizes and int32[K]: subnet i then sees
      `images` resized to `input_sizes[size_index[i - 1]]` (ST++ 'subnet_resize').
    key: the step's key, for a model with dropout: pass i's dropout key is
      `base.dropout_key(model, key, i)` (None: no dropout keys).

  Returns:
    grads (a params-shaped sum of d(loss_i)/d(params) over the K + 1 passes), the batch
    statistics after the full network's pass, those after the last pass, and a dict of
    f32[1 + K] per-pass values: 'loss', 'kl', 'ce', 'acc', 'kept' (pass 0's loss is its
    cross-entropy, its kl 0).
  """
  num_subnets = masks_run.shape[0] - 1
  if num_subnets % levels:
    raise ValueError(f'{num_subnets} subnet masks do not split into loops of {levels} levels')
  if input_sizes is not None and size_index is None:
    raise ValueError('input_sizes needs size_index')
  side = images.shape[1]
  sizes = None if input_sizes is None else sorted(set(input_sizes) | {side})
  run_pass = _pass_gradients(model, params, images, labels, sizes, temperature=temperature,
                             kl_weight=kl_weight, label_weight=label_weight,
                             label_smoothing=label_smoothing, normalize=normalize)
  body = _scan_body(model, run_pass, labels, key, levels=levels, aggregate=aggregate,
                    momentum=momentum)
  (full_grads, subnet_grads, stats, full_stats, _), per_pass = jax.lax.scan(
      body, _initial_carry(model, params, batch_stats, images, levels),
      (jnp.arange(num_subnets + 1), masks_run,
       _pass_size_index(num_subnets, side, sizes, input_sizes, size_index)))
  grads = jax.tree.map(jnp.add, full_grads, subnet_grads)
  return grads, full_stats, stats, per_pass


def _scan_body(model, run_pass, labels, key, *, levels: int, aggregate: str,
               momentum: float):
  """distill_subnets' scan step: pass `index` (0: the full network) with its mask and size,
  its gradients kept apart (full) or added up (subnets), its knowledge aggregated."""

  def body(carry, inputs):
    full_grads, subnet_grads, stats, full_stats, knowledge = carry
    index, keep_mask, size_i = inputs
    first = index == 0
    level = jnp.where(first, 0, (index - 1) % levels + 1)
    loop = jnp.maximum(index - 1, 0) // levels
    teacher = knowledge[jnp.maximum(level - 1, 0)]
    dropout = None if key is None else dropout_key(model, key, index)
    (loss, (stats, logits, kl, ce)), grads = run_pass(stats, keep_mask, teacher, first, size_i,
                                                      dropout)
    full_grads = jax.tree.map(lambda f, g: jnp.where(first, g, f), full_grads, grads)
    subnet_grads = jax.tree.map(lambda t, g: jnp.where(first, t, t + g), subnet_grads, grads)
    full_stats = jax.tree.map(lambda f, s: jnp.where(first, s, f), full_stats, stats)
    logits = jax.lax.stop_gradient(logits)
    updated = jnp.where(first, logits, groups.update_group_knowledge(
        knowledge[level], logits, loop, aggregate=aggregate, momentum=momentum))
    knowledge = knowledge.at[level].set(updated)
    outputs = {'loss': loss, 'kl': kl, 'ce': ce,
               'acc': jnp.mean(losses.accuracy(logits, labels)),
               'kept': jnp.mean(keep_mask.astype(jnp.float32))}
    return (full_grads, subnet_grads, stats, full_stats, knowledge), outputs

  return body


def _initial_carry(model, params, batch_stats, images, levels: int):
  """(full grads, subnet grads, statistics, full network's statistics, knowledge f32[G + 1,
  B, C]) before the first pass."""
  # The model's own field where it has one (an abstract trace of the network costs about
  # 0.2 s of every ResNet-56 compile); else that trace.
  num_classes = getattr(model, 'num_classes', None) or jax.eval_shape(
      lambda: run_model(model, params, batch_stats, images[:1], train=False)[0]).shape[-1]
  # Under shard_map ('pmap' mode) the knowledge and the passes' statistics vary over the
  # devices as the images do; a scan's carry must start as it ends.
  knowledge = with_variance_of(
      jnp.zeros((levels + 1, images.shape[0], num_classes), _logits_dtype(model, params)),
      images)
  start_stats = jax.tree.map(lambda x: with_variance_of(x, images), batch_stats)
  zeros = jax.tree.map(jnp.zeros_like, params)
  return zeros, zeros, start_stats, start_stats, knowledge


def _pass_size_index(num_subnets: int, side: int, sizes, input_sizes, size_index):
  """int32[1 + K]: each pass's index into `sizes` (all 0 without resizing); the full network
  at the unresized side, subnets at their drawn sizes."""
  if sizes is None:
    return jnp.zeros((num_subnets + 1,), jnp.int32)
  to_sorted = jnp.asarray([sizes.index(int(s)) for s in input_sizes], jnp.int32)
  return jnp.concatenate([jnp.full((1,), sizes.index(side), jnp.int32),
                          to_sorted[size_index]])


def per_level_measurements(per_subnet: dict[str, jax.Array], levels: int,
                           prefix: str = 'level') -> dict[str, jax.Array]:
  """Averages f32[K] per-subnet values over loops: '{name}/{prefix}{g}' for g = 1..levels."""
  out = {}
  for name, values in per_subnet.items():
    by_level = values.reshape(-1, levels).mean(axis=0)
    for g in range(levels):
      out[f'{name}/{prefix}{g + 1}'] = by_level[g]
  return out


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

    masks_run = self.masks_run(key)
    size_key = jax.random.split(key)[1]
    sizes = self.resize_sizes(images.shape[1])
    size_index = None
    if sizes is not None:
      size_index = jax.random.randint(size_key, (masks_run.shape[0] - 1,), 0, len(sizes))
    # Scopes name the step's parts in profiles (profile_step); here the full network's
    # pass is the scan's first.
    with jax.named_scope('subnets'):
      grads, full_stats, subnet_stats, per_pass = distill_subnets(
          self.model, params, batch_stats, images, labels, masks_run, levels=self.levels,
          aggregate=self.aggregate, momentum=self.momentum, temperature=config.temperature,
          kl_weight=config.kl_weight, label_weight=config.subnet_label_weight,
          label_smoothing=smoothing, normalize=normalize, input_sizes=sizes,
          size_index=size_index, key=key)
    ce = per_pass['ce'][0]
    per_subnet = {name: values[1:] for name, values in per_pass.items()}
    stats = subnet_stats if config.bn_stats == 'every_pass' else full_stats
    measurements = {
        'loss': ce + jnp.sum(per_subnet['loss']),
        'ce/full': ce,
        'train_acc/full': per_pass['acc'][0],
    }
    measurements.update(self.subnet_measurements(per_subnet))
    return grads, (stats, method_state, measurements)

  def subnet_measurements(self, per_subnet: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The step's measurements of the f32[K] per-subnet values: their means by level."""
    return per_level_measurements(per_subnet, self.levels)

  def masks_run(self, key) -> jax.Array:
    """The full network, then the subnets `sample_masks` draws from the key's first half."""
    subnet_masks = self.sample_masks(jax.random.split(key)[0])
    return jnp.concatenate([jnp.ones((1, self.num_blocks), bool), subnet_masks])

  def forwards_per_step(self) -> int:
    return int(jax.eval_shape(self.masks_run, jax.random.key(0)).shape[0])
