"""LayerDrop (Fan, Grave and Joulin, ICLR 2020): structured dropout of whole residual blocks
at a uniform rate during training, then pruning at inference without fine-tuning.

Each step drops every droppable block (all but the stage-first ones; with
`drop_stage_first`, every block) with probability `drop_rate`, one draw per block shared by
the batch; a dropped block outputs its shortcut and is not run. Nothing is rescaled, neither
in training nor at test time. The deployed network keeps every block; the network pruned by
their "every other" rule (`masks.pruned_every_other`) is measured by the `pruned_depth`
evaluator, which LayerDrop's configs run and any method's can.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gkt_jax import masks
from gkt_jax.config.method import LayerDropSettings
from gkt_jax.methods.base import Method
from gkt_jax.methods.stochastic_depth import sampled_network_gradients


class LayerDrop(Method):
  name = 'layerdrop'
  Settings = LayerDropSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    settings = self.settings
    may_drop = (np.ones(self.num_blocks, bool) if settings.drop_stage_first
                else masks.droppable_mask(self.stage_sizes))
    # f32[L]: the probability that each block runs in training.
    self.survival = jnp.asarray(np.where(may_drop, 1.0 - settings.drop_rate, 1.0),
                                jnp.float32)

  def gradients(self, params, batch_stats, batch, key, method_state):
    keep_mask = self.masks_run(key)[0]
    grads, new_stats, measurements = sampled_network_gradients(
        self, params, batch_stats, batch, key, keep_mask, None)
    measurements['kept_fraction'] = jnp.mean(keep_mask.astype(jnp.float32))
    return grads, (new_stats, method_state, measurements)

  def masks_run(self, key):
    """bool[1, L]: the step's blocks, each kept with probability `survival`."""
    return masks.sample_stochastic_depth(key, self.survival)[None]
