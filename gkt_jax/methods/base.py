"""What every method gives the trainer, and the pieces methods share.

A method turns one batch into gradients:

  gradients(params, batch_stats, batch, key, method_state)
      -> grads, (batch_stats, method_state, measurements)

`batch` holds 'images' f32[B, H, W, C] (normalised, augmented once: every forward of the
step sees the same images) and 'labels' int32[B]. `key` is the step's key: the step's masks
are drawn from it, and, for a model with dropout, a dropout key per forward pass
(`dropout_key`). `measurements` is a flat dict of scalars (every loss term, per subnet
level). `masks_run(key)` gives the keep masks of the forward passes a step with `key` runs
(cost accounting reads them without running the step; the step draws its own masks there).

The design sketched `loss_fn -> loss`; methods return gradients instead so a method that
runs many subnets can scan over them and accumulate gradients in the carry (one compiled
subnet pass instead of 1 + loops x levels unrolled ones). `loss_gradients` adapts a plain
loss function.

`predict(variables, images)` gives the logits of the deployed (full) network at test time.

Each method's settings are a frozen dataclass (`Method.Settings`, see gkt_jax/settings.py):
every `config.method` field with its default and its check, read once in `__init__` into
`self.settings`; the experiment configs take their method defaults from it
(`default_config`) and the validator its checks (`read_settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gkt_jax import losses
from gkt_jax import settings as settings_lib
from gkt_jax.config.method import MethodSettings
from gkt_jax.models import ResNet, cost

Measurements = dict[str, jax.Array]


# Folded into a step key to give its dropout keys (`dropout_key`): a stream apart from the
# step's mask draws, which split the step key itself.
DROPOUT_STREAM = 0x64726f70


def run_model(model: ResNet, params, batch_stats, images, *, keep_mask=None, train=True,
              residual_scale=None, dropout_key=None):
  """One forward pass; returns logits, features and the updated batch statistics.

  `dropout_key` (train mode only; None: no 'dropout' rng) feeds the model's dropout layers
  (`rngs={'dropout': dropout_key}`); a model without dropout draws nothing from it.
  """
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train:
    logits, features = model.apply(variables, images, keep_mask=keep_mask, train=False,
                                   residual_scale=residual_scale)
    return logits, features, batch_stats
  rngs = {} if dropout_key is None else {'dropout': dropout_key}
  (logits, features), updates = model.apply(
      variables, images, keep_mask=keep_mask, train=True, residual_scale=residual_scale,
      mutable=['batch_stats'], rngs=rngs)
  return logits, features, updates['batch_stats']


def dropout_rate(model) -> float:
  """The model's `dropout_rate` field (0 for a model without one)."""
  return float(getattr(model, 'dropout_rate', 0.0) or 0.0)


def dropout_key(model, step_key, pass_index) -> jax.Array | None:
  """The dropout key of forward pass `pass_index` (int or traced int32) of a step with
  `step_key`, or None when `model` has no dropout (its step then draws and compiles
  nothing more). The step key is folded with DROPOUT_STREAM, then with the pass index, so
  the step's other draws (its masks) do not change."""
  if dropout_rate(model) <= 0:
    return None
  return jax.random.fold_in(jax.random.fold_in(step_key, DROPOUT_STREAM), pass_index)


def mean_accuracy(logits, labels):
  return jnp.mean(losses.accuracy(logits, labels))


SettingsLike = Mapping[str, Any] | ml_collections.ConfigDict | settings_lib.Settings


class Method:
  """Base class: the full network trained with cross-entropy (the baseline)."""

  name = 'baseline'
  Settings: type[settings_lib.Settings] = MethodSettings
  # Step measurements the progress line shows beside the loss and the learning rate, and
  # the loss terms the training-curve plot draws (those two names, and names with these
  # prefixes).
  progress_metrics: tuple[str, ...] = ('ce/full', 'ce/sampled')
  loss_terms: tuple[str, ...] = ('loss',)
  loss_term_prefixes: tuple[str, ...] = ('ce/', 'kl/')

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """The `config.method` section of this method's defaults."""
    return {'name': cls.name, **cls.Settings.defaults()}

  @classmethod
  def read_settings(cls, config: SettingsLike) -> settings_lib.Settings:
    """Checked settings from a `config.method` section (its 'name' aside), or `config`
    itself when it already is this method's settings."""
    if isinstance(config, cls.Settings):
      return config
    return cls.Settings.read(config, 'method', owner=f'method {cls.name!r}', ignore=('name',))

  @classmethod
  def build(cls, config: SettingsLike, model: ResNet) -> 'Method':
    """The method around the configured network (`training_model` builds what it trains)."""
    settings = cls.read_settings(config)
    return cls(settings, cls.training_model(settings, model))

  @classmethod
  def training_model(cls, settings: settings_lib.Settings, model: ResNet) -> ResNet:
    """The network this method trains, built around the configured one (e.g. EKD adds a
    classmate branch); its main path is the deployed network."""
    del settings
    return model

  def __init__(self, config: SettingsLike, model: ResNet):
    """`config`: the `config.method` section or this method's settings."""
    self.settings = self.read_settings(config)
    self.model = model
    self.num_blocks = model.num_blocks
    self.stage_sizes = tuple(model.stage_sizes)

  @property
  def per_device_randomness(self) -> bool:
    """In 'pmap' mode on several devices, whether the step key is folded with the device
    index whatever `per_device_subnets` says: per-example randomness such as dropout must
    differ by shard. True when the trained model has dropout (`model.dropout_rate > 0`)."""
    return dropout_rate(self.model) > 0

  @classmethod
  def is_loss_term(cls, name: str) -> bool:
    """Whether the step measurement `name` is a term of the loss (plotted as one)."""
    return name in cls.loss_terms or name.startswith(cls.loss_term_prefixes)

  @classmethod
  def deployed_variables(cls, tree: dict) -> dict:
    """The deployed network's part of a trained params or batch_stats dict (what an export
    keeps): all of it, unless the method trains more than it deploys."""
    return tree

  def init_state(self) -> Any:
    """Method state carried across steps (checkpointed with the train state)."""
    return {}

  def label_smoothing(self) -> float:
    return float(self.settings.label_smoothing)

  def bn_recalibration_images(self) -> int:
    """Training images to recompute BatchNorm statistics from before every evaluation."""
    return int(self.settings.bn_recalibration_images)

  def gradients(self, params, batch_stats, batch, key, method_state):
    raise NotImplementedError

  def deployed_apply_kwargs(self) -> dict:
    """Keyword arguments of `model.apply` besides the mode that make the deployed network
    (`predict`'s), e.g. stochastic depth's test-time residual scaling: BatchNorm
    recalibration runs this network in training mode."""
    return {}

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

  def fixed_sources(self) -> dict[str, list[str]]:
    """Fixed networks this method reads but does not train (e.g. ResKD's teacher), by name:
    the workdirs of the runs that trained them."""
    return {}

  def attach_fixed(self, nets: dict) -> None:
    """Receives {name: [(model, variables)]} for `fixed_sources()`."""
    del nets

  def fixed_inputs(self):
    """Variables of the fixed networks, fed to every step as `batch['fixed']` and to
    `predict` as `variables['fixed']` (None: there are none)."""
    return None

  def masks_run(self, key) -> jax.Array:
    """bool[F, L]: the keep masks of the F forward passes that a step with `key` runs, in
    order (the full network is a row of ones). `gradients` draws its masks here, so cost
    accounting (bench_step, reproduce) reads what a step runs without running it."""
    del key
    return full_mask(self.num_blocks)

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
