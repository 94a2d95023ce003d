"""Stochastic depth (Huang et al., ECCV 2016): one Bernoulli keep mask per minibatch.

Every block, the downsampling ones included, is kept with probability p_i (linear decay to
`final_survival`, or uniform); a dropped block outputs its shortcut and is not run. At test
time every block runs with its residual branch scaled by p_i (`test_scaling=True`, the
paper's rule) or unscaled (`False`, for the 'inverted' variant, which then scales by 1/p_i
during training). Subnet evaluators run the same test-time rule on the blocks they keep.
"""

from __future__ import annotations


import jax.numpy as jnp

from gkt_jax import losses, masks
from gkt_jax.config.method import StochasticDepthSettings
from gkt_jax.methods.base import Method, dropout_key, loss_gradients, mean_accuracy, run_model


class StochasticDepth(Method):
  name = 'stochastic_depth'
  Settings = StochasticDepthSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    self.survival = masks.stochastic_depth_survival(
        self.num_blocks, final_survival=self.settings.final_survival, rule=self.settings.rule)
    self.test_scaling = self.settings.test_scaling

  def gradients(self, params, batch_stats, batch, key, method_state):
    keep_mask = self.masks_run(key)[0]
    # 'inverted' variant: scale kept branches by 1/p_i in training, run plain at test time.
    scale = None if self.test_scaling else 1.0 / self.survival
    dropout = dropout_key(self.model, key, 0)

    def loss_fn(p):
      logits, _, new_stats = run_model(self.model, p, batch_stats, batch['images'],
                                       keep_mask=keep_mask, residual_scale=scale,
                                       dropout_key=dropout)
      ce = jnp.mean(losses.cross_entropy(logits, batch['labels'], self.label_smoothing()))
      return ce, (new_stats, ce, mean_accuracy(logits, batch['labels']))

    grads, (new_stats, ce, acc) = loss_gradients(loss_fn, params)
    measurements = {
        'loss': ce, 'ce/sampled': ce, 'train_acc/sampled': acc,
        'kept_fraction': jnp.mean(keep_mask.astype(jnp.float32)),
    }
    return grads, (new_stats, method_state, measurements)

  def masks_run(self, key):
    return masks.sample_stochastic_depth(key, self.survival)[None]

  def predict(self, variables, images):
    return self.subnet_logits(variables, images, None)

  def subnet_logits(self, variables, images, keep_mask):
    """Every kept block's branch scaled by its survival probability (test_scaling), as the
    deployed network runs it; dropped blocks output their shortcut."""
    scale = self.survival if self.test_scaling else None
    return self.model.apply(variables, images, keep_mask=keep_mask, train=False,
                            residual_scale=scale)[0]
