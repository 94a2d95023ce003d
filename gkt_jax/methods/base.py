"""What every method gives the trainer, and the pieces methods share.

A method turns one batch into gradients:

  gradients(params, batch_stats, batch, key, method_state)
      -> grads, (batch_stats, method_state, measurements)

`batch` holds 'images' f32[B, H, W, C] (normalised, augmented once: every forward of the
step sees the same images) and 'labels' int32[B]. `measurements` is a flat dict of scalars
(every loss term, per subnet level) plus 'masks_run' bool[F, L], the keep masks of the F
forward passes the step ran (the full network is a row of ones), used for cost accounting.

The design sketched `loss_fn -> loss`; methods return gradients instead so a method that
runs many subnets can scan over them and accumulate gradients in the carry (one compiled
subnet pass instead of 1 + loops x levels unrolled ones). `loss_gradients` adapts a plain
loss function.

`predict(variables, images)` gives the logits of the deployed (full) network at test time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gkt_jax import losses
from gkt_jax.models import ResNet, cost

Measurements = dict[str, jax.Array]


def run_model(model: ResNet, params, batch_stats, images, *, keep_mask=None, train=True,
              residual_scale=None):
  """One forward pass; returns logits, features and the updated batch statistics."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train:
    logits, features = model.apply(variables, images, keep_mask=keep_mask, train=False,
                                   residual_scale=residual_scale)
    return logits, features, batch_stats
  (logits, features), updates = model.apply(
      variables, images, keep_mask=keep_mask, train=True, residual_scale=residual_scale,
      mutable=['batch_stats'])
  return logits, features, updates['batch_stats']


def mean_accuracy(logits, labels):
  return jnp.mean(losses.accuracy(logits, labels))


class Method:
  """Base class: the full network trained with cross-entropy (the baseline)."""

  name = 'baseline'
  # The `config.method` fields this method reads (the trainer reads bn_recalibration_images);
  # `train.validate_config` refuses any other.
  config_fields: tuple[str, ...] = ('name', 'label_smoothing', 'bn_recalibration_images')
  # In 'pmap' mode on several devices, fold the device index into the step key whatever
  # `per_device_subnets` says (per-example randomness such as dropout must differ by shard).
  per_device_randomness = False

  @classmethod
  def training_model(cls, config: ml_collections.ConfigDict, model: ResNet) -> ResNet:
    """The network this method trains, built around the configured one (e.g. EKD adds a
    classmate branch); its main path is the deployed network."""
    del config
    return model

  def __init__(self, config: ml_collections.ConfigDict, model: ResNet):
    self.config = config
    self.model = model
    self.num_blocks = model.num_blocks
    self.stage_sizes = tuple(model.stage_sizes)

  def init_state(self) -> Any:
    """Method state carried across steps (checkpointed with the train state)."""
    return {}

  def label_smoothing(self) -> float:
    return float(self.config.get('label_smoothing', 0.0))

  def gradients(self, params, batch_stats, batch, key, method_state):
    raise NotImplementedError

  def predict(self, variables, images):
    """Test-time logits of the deployed network."""
    return self.model.apply(variables, images, train=False)[0]

  def subnet_logits(self, variables, images, keep_mask):
    """Test-time logits of the deployed network with only the blocks of keep_mask bool[L]
    (subnet evaluators go through this, so a method's test-time rule applies to subnets too;
    an all-True mask gives `predict`'s network)."""
    return self.model.apply(variables, images, keep_mask=keep_mask, train=False)[0]

  def forwards_per_step(self) -> int:
    return 1

  def frozen_sources(self) -> dict[str, list[str]]:
    """Frozen networks this method needs, by name: the workdirs of their runs (ResKD)."""
    return {}

  def attach_frozen(self, nets: dict) -> None:
    """Receives {name: [(model, variables)]} for `frozen_sources()`."""
    del nets

  def frozen_inputs(self):
    """Variables of the frozen networks, fed to every step as `batch['frozen']` and to
    `predict` as `variables['frozen']` (None: there are none)."""
    return None

  def step_forward_flops(self, input_shape, masks_run) -> float:
    """Forward FLOPs per example of one training step that ran `masks_run` bool[F, L]."""
    fixed, per_block = cost.block_flops(self.model, input_shape)
    return cost.masks_flops(fixed, per_block, masks_run)

  def adapt_init_weights(self, params: dict, batch_stats: dict, like_params: dict,
                         like_batch_stats: dict) -> tuple[dict, dict, list[str]]:
    """Weights read for `config.init`, completed to this method's model (`like_*`).

    Returns (params, batch_stats, notes): notes name what was filled in, for the log.
    """
    del like_params, like_batch_stats
    return params, batch_stats, []


def loss_gradients(loss_fn: Callable, params):
  """Gradients of `loss_fn(params) -> (loss, aux)`; returns grads, aux."""
  grads, aux = jax.grad(loss_fn, has_aux=True)(params)
  return grads, aux


def full_mask(num_blocks: int) -> jax.Array:
  return jnp.ones((1, num_blocks), bool)
