"""Baseline: the full network trained with cross-entropy."""

from __future__ import annotations

import jax.numpy as jnp

from gkt_jax import losses
from gkt_jax.methods.base import Method, dropout_key, loss_gradients, mean_accuracy, run_model


class Baseline(Method):
  name = 'baseline'

  def gradients(self, params, batch_stats, batch, key, method_state):
    dropout = dropout_key(self.model, key, 0)

    def loss_fn(p):
      logits, _, new_stats = run_model(self.model, p, batch_stats, batch['images'],
                                       dropout_key=dropout)
      ce = jnp.mean(losses.cross_entropy(logits, batch['labels'], self.label_smoothing()))
      return ce, (new_stats, ce, mean_accuracy(logits, batch['labels']))

    grads, (new_stats, ce, acc) = loss_gradients(loss_fn, params)
    measurements = {'loss': ce, 'ce/full': ce, 'train_acc/full': acc}
    return grads, (new_stats, method_state, measurements)
