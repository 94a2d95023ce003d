"""EKD-FWSNet (Zhao et al., TCSVT 2023; BMVC 2021), as docs/methods/ekd_fwsnet.md reads it.

One classmate branch shares its aux stages between the paths entering it at each branch
point (`models.ClassmateResNet`); the mean of every path's logits (the main one included) is
an ensemble teacher that distils into the main path, with an attention-map term on the final
feature maps (`losses.ensemble_distillation_loss`). One optimizer trains all parameters. At
test time only the main path runs: the deployed network is the plain ResNet
(`experiments/export_main_path.py` writes it alone).

BatchNorm statistics are computed over the step's (global) batch, as for every method here.
The trunk (the deployed network) runs once per step, so its running statistics are its own
and no `bn_stats` choice arises; the aux stages, run by several paths, update theirs once
per path in path order, as the authors' code does.
"""

from __future__ import annotations


import jax.numpy as jnp

from gkt_jax import losses, models
from gkt_jax.config.method import EKDFWSSettings
from gkt_jax.methods.base import Method, loss_gradients
from gkt_jax.models import classmate, cost


def default_dropout_rate(stage_sizes) -> float:
  """The spec's dropout at the branch points: 0.2 for 3-stage ResNets, 0.1 for 4-stage."""
  return 0.2 if len(stage_sizes) == 3 else 0.1


class EKDFWS(Method):
  name = 'ekd_fws'
  Settings = EKDFWSSettings
  per_device_randomness = True  # the step key only draws dropout masks
  loss_terms = ('loss', 'kd', 'att')

  @classmethod
  def deployed_variables(cls, tree: dict) -> dict:
    """The main path: the classmate branch's variables (`aux_*`, `head_cm*`) dropped."""
    return classmate.main_path(tree)

  @classmethod
  def training_model(cls, settings, model):
    if not isinstance(model, models.ResNet) or len(model.stage_sizes) < 2:
      raise ValueError(
          f'ekd_fws needs a ResNet of >= 2 stages (its classmate branch re-enters the '
          f'ResNet stages after each branch point); got {type(model).__name__} with '
          f'stage_sizes={tuple(model.stage_sizes)}: use model.arch=resnet*')
    rate = settings.dropout_rate
    if rate is None:
      rate = default_dropout_rate(model.stage_sizes)
    return models.with_classmates(model, float(rate))

  def __init__(self, config, model):
    settings = self.read_settings(config)
    if not isinstance(model, models.ClassmateResNet):
      model = self.training_model(settings, model)
    super().__init__(settings, model)
    if len(self.stage_sizes) < 2:
      raise ValueError(f'ekd_fws needs a network of >= 2 stages; stage_sizes={self.stage_sizes}')
    self.temperature = float(settings.temperature)
    self.kd_weight = float(settings.kd_weight)
    self.att_weight = float(settings.att_weight)
    self.detach_teacher = settings.detach_teacher
    self.path_names = self.model.path_names

  def loss_terms(self, path_logits, path_features, labels):
    """Per-example terms of `losses.ensemble_distillation_loss` with this config."""
    return losses.ensemble_distillation_loss(
        path_logits, labels, path_features=path_features, temperature=self.temperature,
        kd_weight=self.kd_weight, att_weight=self.att_weight,
        label_smoothing=self.label_smoothing(), detach_teacher=self.detach_teacher,
        attention_eps=float(self.settings.attention_eps))

  def gradients(self, params, batch_stats, batch, key, method_state):
    labels = batch['labels']

    def loss_fn(p):
      (_, features), updates = self.model.apply(
          {'params': p, 'batch_stats': batch_stats}, batch['images'], train=True,
          classmates=True, mutable=['batch_stats'], rngs={'dropout': key})
      path_logits = features['path_logits']
      terms = self.loss_terms(path_logits, features['path_features'], labels)
      return jnp.mean(terms['loss']), (updates['batch_stats'], path_logits, terms)

    grads, (new_stats, path_logits, terms) = loss_gradients(loss_fn, params)
    ce = jnp.mean(terms['ce'], axis=1)
    correct = jnp.argmax(path_logits, axis=-1) == labels
    ensemble = losses.ensemble_logits(path_logits)
    measurements = {
        'loss': jnp.mean(terms['loss']), 'ce/full': ce[0], 'ce/classmates': jnp.mean(ce[1:]),
        'kd': jnp.mean(terms['kd']), 'att': jnp.mean(terms['att']),
        'train_acc/ensemble': jnp.mean(losses.accuracy(ensemble, labels))}
    for i, name in enumerate(self.path_names):
      if i:
        measurements[f'ce/{name}'] = ce[i]
      measurements[f'train_acc/{name}'] = jnp.mean(correct[i].astype(jnp.float32))
    return grads, (new_stats, method_state, measurements)

  def forwards_per_step(self) -> int:
    return self.model.num_paths

  def step_forward_flops(self, input_shape, masks_run) -> float:
    del masks_run  # every path runs whole
    return cost.forward_flops(self.model, input_shape, classmates=True)

  def adapt_init_weights(self, params, batch_stats, like_params, like_batch_stats):
    """A plain ResNet's weights (a baseline checkpoint) start the trunk, and each aux stage
    as a copy of the trunk's stage; the classmate heads keep their fresh initialisation."""
    params, filled = classmate.fill_branch_from_trunk(params, like_params)
    batch_stats, _ = classmate.fill_branch_from_trunk(batch_stats, like_batch_stats)
    return params, batch_stats, filled
