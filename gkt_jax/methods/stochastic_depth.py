"""Stochastic depth (Huang et al., ECCV 2016): one Bernoulli keep mask per minibatch.

Every block, the downsampling ones included, is kept with probability p_i (linear decay to
`final_survival`, or uniform); a dropped block outputs its shortcut and is not run. At test
time every block runs with its residual branch scaled by p_i (`test_scaling=True`, the
paper's rule) or unscaled (`False`, for the 'inverted' variant, which then scales by 1/p_i
during training). Subnet evaluators run the same test-time rule on the blocks they keep.

`granularity='example'` is the per-example draw of DeiT's DropPath: one keep bit per example
and block, applied as a per-example residual scale (bit / p_i in the inverted variant, the bit
itself under `test_scaling`). No block is skipped: every block runs for the whole batch.
"""

from __future__ import annotations


import jax.numpy as jnp

from gkt_jax import losses, masks
from gkt_jax.config.method import StochasticDepthSettings
from gkt_jax.methods.base import Method, dropout_key, loss_gradients, mean_accuracy, run_model


def sampled_network_gradients(method: Method, params, batch_stats, batch, key, keep_mask,
                              scale):
  """Cross-entropy gradients of one training pass through the network `keep_mask` (bool[L]
  or None) with `residual_scale` `scale`: grads, the new batch statistics and the
  measurements 'loss', 'ce/sampled', 'train_acc/sampled'."""
  dropout = dropout_key(method.model, key, 0)

  def loss_fn(p):
    logits, _, new_stats = run_model(method.model, p, batch_stats, batch['images'],
                                     keep_mask=keep_mask, residual_scale=scale,
                                     dropout_key=dropout)
    ce = jnp.mean(losses.cross_entropy(logits, batch['labels'], method.label_smoothing()))
    return ce, (new_stats, ce, mean_accuracy(logits, batch['labels']))

  grads, (new_stats, ce, acc) = loss_gradients(loss_fn, params)
  return grads, new_stats, {'loss': ce, 'ce/sampled': ce, 'train_acc/sampled': acc}


class StochasticDepth(Method):
  name = 'stochastic_depth'
  Settings = StochasticDepthSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    self.survival = masks.stochastic_depth_survival(
        self.num_blocks, final_survival=self.settings.final_survival, rule=self.settings.rule)
    self.test_scaling = self.settings.test_scaling

  @property
  def per_device_randomness(self) -> bool:
    """Per-example keep bits differ by shard in 'pmap' mode, as dropout's do."""
    return super().per_device_randomness or self.settings.granularity == 'example'

  def train_mask_and_scale(self, key, batch_size: int):
    """(keep_mask bool[L] or None, residual_scale f32[L], f32[B, L] or None) of a training
    pass: a per-batch mask whose kept branches the inverted variant scales by 1/p_i, or
    per-example bits as a residual scale (bit / p_i, inverted) with every block run."""
    if self.settings.granularity == 'example':
      bits = masks.sample_drop_path(key, self.survival, batch_size).astype(jnp.float32)
      return None, bits if self.test_scaling else bits / self.survival
    keep_mask = self.masks_run(key)[0]
    # 'inverted' variant: scale kept branches by 1/p_i in training, run plain at test time.
    return keep_mask, None if self.test_scaling else 1.0 / self.survival

  def gradients(self, params, batch_stats, batch, key, method_state):
    keep_mask, scale = self.train_mask_and_scale(key, batch['images'].shape[0])
    grads, new_stats, measurements = sampled_network_gradients(
        self, params, batch_stats, batch, key, keep_mask, scale)
    measurements['kept_fraction'] = self._kept_fraction(keep_mask, scale)
    return grads, (new_stats, method_state, measurements)

  def _kept_fraction(self, keep_mask, scale):
    """The fraction of kept blocks (per example and block with per-example bits)."""
    if keep_mask is None:
      return jnp.mean((scale > 0).astype(jnp.float32))
    return jnp.mean(keep_mask.astype(jnp.float32))

  def masks_run(self, key):
    """The step's per-batch mask; all True with per-example bits (every block runs)."""
    if self.settings.granularity == 'example':
      return jnp.ones((1, self.num_blocks), bool)
    return masks.sample_stochastic_depth(key, self.survival)[None]

  def predict(self, variables, images):
    return self.subnet_logits(variables, images, None)

  def deployed_apply_kwargs(self) -> dict:
    """Kept branches scaled by their survival probability (test_scaling)."""
    return {'residual_scale': self.survival} if self.test_scaling else {}

  def subnet_logits(self, variables, images, keep_mask):
    """Every kept block's branch scaled by its survival probability (test_scaling), as the
    deployed network runs it; dropped blocks output their shortcut."""
    return self.model.apply(variables, images, keep_mask=keep_mask, train=False,
                            **self.deployed_apply_kwargs())[0]
