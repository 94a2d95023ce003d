"""ResKD (Li et al., TIP 2021), our reading (docs/methods/reskd.md): a KD student, then
res-students.

Every stage is its own run of the trainer:
  teacher     method 'baseline' (CE)
  student     method 'kd': CE(z_S) + alpha T^2 KL(softmax(z_T/T) || softmax(z_S/T)), the
              teacher frozen
  res-student method 'reskd' (stage k): learns r_k with the teacher and the combined student
              C_{k-1} (z_S + r_1 + ... + r_{k-1}) frozen; z_{C,k} = z_{C,k-1} + r_k, and
              residual_target='logits': mean over classes of (r_k - (z_T - z_{C,k-1}))^2
              (our choice of reduction), or 'kd': the student's KD loss on z_{C,k}.
Frozen networks are named by the workdirs of their runs (`config.method.teacher`, `student`,
`res_students`); the trainer loads them (`fixed_sources` / `attach_fixed`) and feeds their
variables to the step as an input (`batch['fixed']`): they are in neither the optimizer nor
the checkpoint, run in inference mode (BatchNorm running statistics), and are
`stop_gradient`-ed. With `student_features=True` a res-student's head also reads the frozen
student's pre-logits (`models.SideInputResNet`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from gkt_jax import losses, models
from gkt_jax.config.method import KDSettings, ResKDSettings
from gkt_jax.config.names import RESIDUAL_TARGETS
from gkt_jax.methods.base import (Method, dropout_key, loss_gradients, mean_accuracy,
                                  run_model)


def kd_loss(student_logits, teacher_logits, labels, *, alpha: float, temperature: float,
            label_smoothing: float = 0.0):
  """Per-example CE(z_S, y) + alpha * T^2 KL(softmax(z_T/T) || softmax(z_S/T))."""
  return (losses.cross_entropy(student_logits, labels, label_smoothing)
          + alpha * losses.distillation_kl(student_logits, teacher_logits, temperature))


def chain_logits(student, residuals, images) -> jax.Array:
  """Stage logits f32[K+1, B, C] of frozen networks: [z_S, r_1, ..., r_K].

  Args:
    student: (model, variables) of the KD student.
    residuals: [(model, variables)] of res-students 1..K; one whose model has a
      `side_features_dim` reads the student's pre-logits.
    images: f32[B, H, W, C], normalised.
  """
  return _chain(student, residuals, images)[0]


def _chain(student, residuals, images) -> tuple[jax.Array, jax.Array]:
  """`chain_logits` and the student's pre-logits, from one pass of each network."""
  model, variables = student
  z_s, features = model.apply(variables, images, train=False)
  out = [z_s]
  for model, variables in residuals:
    side = ({'side_features': features['pre_logits']}
            if getattr(model, 'side_features_dim', 0) else {})
    out.append(model.apply(variables, images, train=False, **side)[0])
  return jnp.stack([z.astype(jnp.float32) for z in out]), features['pre_logits']


def _frozen_apply(model, variables, images):
  return jax.lax.stop_gradient(model.apply(variables, images, train=False)[0])


class _Frozen:
  """Bookkeeping of frozen networks: models here, variables fed to the step."""
  loss_terms = ('loss', 'kd')

  def bn_recalibration_images(self) -> int:
    return 0  # not a field of a chain's stages (KDSettings)

  def attach_fixed(self, nets: dict) -> None:
    """nets: {name: [(model, variables), ...]} for the names of `fixed_sources()`."""
    missing = set(self.fixed_sources()) - set(nets)
    if missing:
      raise ValueError(f'{self.name}: frozen networks {sorted(missing)} were not given')
    self.frozen_models = {k: [m for m, _ in v] for k, v in nets.items()}
    self._frozen_variables = {k: [var for _, var in v] for k, v in nets.items()}

  def fixed_inputs(self):
    if self.fixed_sources() and not hasattr(self, '_frozen_variables'):
      raise ValueError(f'{self.name}: call attach_fixed() with the frozen networks first '
                       '(train_and_evaluate does it from the workdirs in the config)')
    return getattr(self, '_frozen_variables', None)

  def _nets(self, frozen, name):
    return list(zip(self.frozen_models[name], frozen[name]))

  def _required(self, field: str) -> str:
    value = getattr(self.settings, field)
    if not value:
      raise ValueError(f'method.{field} is required for {self.name}: the workdir of the '
                       'trained run')
    return value


class KDStudent(_Frozen, Method):
  """Standard KD from a frozen teacher (ResKD's stage-0 student)."""
  name = 'kd'
  Settings = KDSettings

  def __init__(self, config, model):
    super().__init__(config, model)
    self.alpha = float(self.settings.alpha)
    self.temperature = float(self.settings.temperature)

  def fixed_sources(self) -> dict[str, list[str]]:
    return {'teacher': [self._required('teacher')]}

  def gradients(self, params, batch_stats, batch, key, method_state):
    images, labels, frozen = batch['images'], batch['labels'], batch['fixed']
    (teacher,) = self._nets(frozen, 'teacher')
    z_t = _frozen_apply(*teacher, images)
    dropout = dropout_key(self.model, key, 0)

    def loss_fn(p):
      logits, _, new_stats = run_model(self.model, p, batch_stats, images,
                                       dropout_key=dropout)
      per_example = kd_loss(logits, z_t, labels, alpha=self.alpha,
                            temperature=self.temperature,
                            label_smoothing=self.label_smoothing())
      return jnp.mean(per_example), (new_stats, logits)

    grads, (new_stats, logits) = loss_gradients(loss_fn, params)
    measurements = {
        'loss': jnp.mean(kd_loss(logits, z_t, labels, alpha=self.alpha,
                                 temperature=self.temperature,
                                 label_smoothing=self.label_smoothing())),
        'ce/full': jnp.mean(losses.cross_entropy(logits, labels)),
        'kd': jnp.mean(losses.distillation_kl(logits, z_t, self.temperature)),
        'train_acc/full': mean_accuracy(logits, labels),
        'train_acc/teacher': mean_accuracy(z_t, labels)}
    return grads, (new_stats, method_state, measurements)

  def predict(self, variables, images):
    return self.model.apply({k: variables[k] for k in ('params', 'batch_stats')}, images,
                            train=False)[0]


def student_feature_dim(student_workdir: str) -> int:
  """Width of the student's pre-logits, from its run's config.json (no weights read)."""
  path = os.path.join(student_workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'method.student={student_workdir!r}: {path} not found')
  with open(path) as f:
    model = models.from_config(json.load(f)['model'], 1)
  return int(model.stage_widths[-1] * (4 if model.block == 'bottleneck' else 1))


class ResStudent(_Frozen, Method):
  """Res-student k: learns the residual between the frozen teacher and combined student."""
  name = 'reskd'
  Settings = ResKDSettings

  @classmethod
  def training_model(cls, settings, model):
    if settings.student_features:
      return models.with_side_input(model, student_feature_dim(settings.student))
    return model

  def __init__(self, config, model):
    super().__init__(config, model)
    self.alpha = float(self.settings.alpha)
    self.temperature = float(self.settings.temperature)
    self.residual_target = self.settings.residual_target
    self.student_features = self.settings.student_features

  def fixed_sources(self) -> dict[str, list[str]]:
    return {'teacher': [self._required('teacher')], 'student': [self._required('student')],
            'res': list(self.settings.res_students)}

  def _previous(self, frozen, images):
    """Frozen z_T, z_{C,k-1} and the student's pre-logits."""
    (teacher,) = self._nets(frozen, 'teacher')
    (student,) = self._nets(frozen, 'student')
    z_t = _frozen_apply(*teacher, images)
    # One pass of the frozen student gives both its logits and its pre-logits.
    stage_logits, student_features = _chain(student, self._nets(frozen, 'res'), images)
    return (z_t, jax.lax.stop_gradient(jnp.sum(stage_logits, axis=0)),
            jax.lax.stop_gradient(student_features))

  def _residual(self, params, batch_stats, images, student_features, train, dropout=None):
    """This stage's residual logits r_k and batch statistics (`dropout`: the train-mode
    pass's dropout key, or None)."""
    side = {'side_features': student_features} if self.student_features else {}
    variables = {'params': params, 'batch_stats': batch_stats}
    if not train:
      return self.model.apply(variables, images, train=False, **side)[0], batch_stats
    rngs = {} if dropout is None else {'dropout': dropout}
    (r, _), updates = self.model.apply(variables, images, train=True, mutable=['batch_stats'],
                                       rngs=rngs, **side)
    return r, updates['batch_stats']

  def stage_loss(self, residual, z_t, z_prev, labels):
    """Per-example loss of this stage's residual logits r_k."""
    if self.residual_target == 'logits':
      return jnp.mean((residual - (z_t - z_prev)) ** 2, axis=-1)
    return kd_loss(z_prev + residual, z_t, labels, alpha=self.alpha,
                   temperature=self.temperature, label_smoothing=self.label_smoothing())

  def gradients(self, params, batch_stats, batch, key, method_state):
    images, labels = batch['images'], batch['labels']
    z_t, z_prev, student_features = self._previous(batch['fixed'], images)
    dropout = dropout_key(self.model, key, 0)

    def loss_fn(p):
      r, new_stats = self._residual(p, batch_stats, images, student_features, train=True,
                                    dropout=dropout)
      return jnp.mean(self.stage_loss(r, z_t, z_prev, labels)), (new_stats, r)

    grads, (new_stats, r) = loss_gradients(loss_fn, params)
    combined = z_prev + r
    measurements = {
        'loss': jnp.mean(self.stage_loss(r, z_t, z_prev, labels)),
        'ce/full': jnp.mean(losses.cross_entropy(combined, labels)),
        'residual_mse': jnp.mean((r - (z_t - z_prev)) ** 2),
        'train_acc/full': mean_accuracy(combined, labels),
        'train_acc/previous': mean_accuracy(z_prev, labels),
        'train_acc/teacher': mean_accuracy(z_t, labels)}
    return grads, (new_stats, method_state, measurements)

  def predict(self, variables, images):
    """Logits of the combined student C_k = C_{k-1} + R_k (the deployed chain)."""
    _, z_prev, student_features = self._previous(variables['fixed'], images)
    r, _ = self._residual(variables['params'], variables['batch_stats'], images,
                          student_features, train=False)
    return z_prev + r
