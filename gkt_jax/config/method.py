"""`config.method`: one settings class per method (fields, defaults, checks), by name in
`METHODS`; the method itself (gkt_jax/methods/) reads its settings from here.

  METHODS['gkt'].read(config.method, 'method', ignore=('name',))  # GKTSettings, checked
  defaults('gkt')  # {'name': 'gkt', 'levels': 3, ...}: a config file's method section

A settings class whose fields must fit the network (e.g. one M_s per stage) checks them in
`check_stage_sizes(path, stage_sizes)`, which the validator calls once the model is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from gkt_jax import settings as settings_lib
from gkt_jax.config import names
from gkt_jax.settings import (boolean, integer, interval, non_negative, one_of, optional,
                              positive, probability, run_dir, setting)


def label_smoothing_setting() -> Any:
  """Label smoothing of every cross-entropy term (a fresh field per settings class)."""
  return setting(0.0, probability)


@dataclasses.dataclass(frozen=True)
class AnyMethodSettings(settings_lib.Settings):
  """Base of every method's settings."""

  def check_stage_sizes(self, path: str, stage_sizes: Sequence[int]) -> None:
    """Rules between these fields and the network's blocks per stage (subclasses)."""
    del path, stage_sizes


@dataclasses.dataclass(frozen=True)
class MethodSettings(AnyMethodSettings):
  """The fields of every method but ResKD's stages."""
  label_smoothing: float = label_smoothing_setting()
  # Training images whose train-mode passes recompute the deployed network's BatchNorm
  # running statistics before every evaluation (0: off; ST++ uses 2000).
  bn_recalibration_images: int = setting(0, integer(0))


@dataclasses.dataclass(frozen=True)
class StochasticDepthSettings(MethodSettings):
  """Stochastic depth's fields (docs/methods/stochastic_depth.md)."""
  final_survival: float = setting(0.5, probability)  # p_L, the last block's
  rule: str = setting('linear', one_of(names.SURVIVAL_RULES, 'survival rule'))
  # True: the paper's test-time rule (branches scaled by p_i); False: the inverted variant.
  test_scaling: bool = setting(True, boolean)
  # 'batch': one keep bit per block for the whole batch (the paper; dropped blocks do not
  # run); 'example': one per example and block (DeiT's DropPath; every block runs).
  granularity: str = setting('batch', one_of(names.DROP_GRANULARITIES, 'granularity'),
                             listed=False)

  def check(self, path: str) -> None:
    if not self.test_scaling:  # the inverted variant scales kept blocks by 1 / survival
      interval(0.0, 1.0, low_open=True, what='a probability')(
          f'{path}.final_survival', self.final_survival)


@dataclasses.dataclass(frozen=True)
class LayerDropSettings(MethodSettings):
  """LayerDrop's fields (docs/methods/layerdrop.md)."""
  # Every droppable block is dropped with this probability, one draw per block and step
  # shared by the batch; no scaling in training or at test time.
  drop_rate: float = setting(0.2, interval(0.0, 1.0, high_open=True, what='a probability'))
  # False: stage-first (downsampling) blocks always run, the blocks the pruning rule keeps;
  # True: they are dropped at the same rate, as stochastic depth drops them.
  drop_stage_first: bool = setting(False, boolean)


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
  # Which passes update the BatchNorm running statistics (methods/subnet_distillation.py).
  bn_stats: str = setting('full_network',
                          one_of(names.BN_STATS, 'BatchNorm statistics setting'))


@dataclasses.dataclass(frozen=True)
class StimulativeSettings(DistillationSettings):
  """Stimulative training's fields (docs/methods/stimulative_training.md)."""
  n_sub: int = setting(1, integer(1))  # subnets per step (ST++: 6)
  # The inter-stage rule: each stage s keeps at least n_s - M_s blocks (None: any prefix of
  # length >= 1); one M_s per stage (ST++ ResNet-50: (1, 2, 4, 1)).
  max_shortening: tuple[int, ...] | None = setting(
      None, names.SAMPLER_CHECKS['max_shortening'], unset=tuple)

  def check_stage_sizes(self, path: str, stage_sizes: Sequence[int]) -> None:
    names.check_max_shortening(f'{path}.max_shortening', self.max_shortening, stage_sizes)


@dataclasses.dataclass(frozen=True)
class GKTSettings(DistillationSettings):
  """GKT's fields (docs/methods/gkt.md; every guessed choice is one)."""
  levels: int = setting(names.DEFAULT_LEVELS, integer(1))  # G nested subnets per loop
  loops: int = setting(2, integer(1))   # chains per step, each from the full network
  # The child sampler (masks.sample_subnet) and its parameter: 'bernoulli' drops each
  # remaining block with drop_prob; 'geometric' draws the number kept with P(k) ∝ gamma^k.
  sampler: str = setting('bernoulli', one_of(names.SAMPLERS, 'sampler'))
  drop_prob: float = setting(0.2, names.SAMPLER_CHECKS['drop_prob'])
  gamma: float = setting(0.5, names.SAMPLER_CHECKS['gamma'])
  # How a level's knowledge aggregates over loops: an EMA keeping `momentum` of the old
  # knowledge, or a running mean (groups.update_group_knowledge).
  aggregate: str = setting('ema', one_of(names.AGGREGATES, 'aggregate'))
  momentum: float = setting(0.5, probability)


@dataclasses.dataclass(frozen=True)
class SandwichSettings(DistillationSettings):
  """The sandwich rule's fields (docs/methods/sandwich.md): each step trains the full
  network on the labels, the smallest subnet and `n_random` random subnets from the full
  network's detached logits (in-place distillation)."""
  n_random: int = setting(2, integer(0))  # random subnets per step (BigNAS: 2)
  # The random subnets' sampler (masks.sample_subnet) and its parameters: 'prefix' keeps a
  # uniform number of leading blocks per stage (BigNAS's depth draw, capped by
  # max_shortening), 'bernoulli' drops each droppable block with drop_prob, 'geometric'
  # drops k blocks with P(k) ∝ gamma^k.
  sampler: str = setting('prefix', one_of(names.SAMPLERS, 'sampler'))
  max_shortening: tuple[int, ...] | None = setting(
      None, names.SAMPLER_CHECKS['max_shortening'], unset=tuple)
  drop_prob: float = setting(0.2, names.SAMPLER_CHECKS['drop_prob'])
  gamma: float = setting(0.5, names.SAMPLER_CHECKS['gamma'])

  def check_stage_sizes(self, path: str, stage_sizes: Sequence[int]) -> None:
    names.check_max_shortening(f'{path}.max_shortening', self.max_shortening, stage_sizes)

  def sampler_kwargs(self) -> dict[str, Any]:
    """The keyword arguments of `sampler` (`masks.sample_subnet`); max_shortening None is
    left out (any prefix)."""
    values = {'max_shortening': None if self.max_shortening is None
                                else tuple(self.max_shortening),
              'drop_prob': float(self.drop_prob), 'gamma': float(self.gamma)}
    return {name: values[name] for name in names.SAMPLER_KWARGS[self.sampler]
            if values[name] is not None}


@dataclasses.dataclass(frozen=True)
class EKDFWSSettings(MethodSettings):
  """EKD-FWSNet's fields (docs/methods/ekd_fwsnet.md)."""
  temperature: float = setting(3.0, positive)
  # The batch-mean weight of the ensemble KD term (CIFAR-10 ResNet-20/32/44's 1.5; the
  # dataset configs set the spec's value) and of the attention-map term.
  kd_weight: float = setting(1.5, non_negative)
  att_weight: float = setting(1.0, non_negative)
  # Dropout at the branch points; None: 0.2 for 3-stage nets, 0.1 for 4-stage ones.
  dropout_rate: float | None = setting(
      None, optional(interval(0.0, 1.0, high_open=True, what='a probability')), unset=float)
  # False, as in the authors' code: the ensemble teacher is not detached.
  detach_teacher: bool = setting(False, boolean)
  # Added to each attention map's standard deviation; the authors' code divides by the bare
  # standard deviation (0 here), which is NaN for a constant map.
  attention_eps: float = setting(1e-6, non_negative)


@dataclasses.dataclass(frozen=True)
class KDSettings(AnyMethodSettings):
  """The KD student's fields. No BatchNorm recalibration in a ResKD chain: a stage's
  statistics are those its training kept."""
  label_smoothing: float = label_smoothing_setting()
  # The workdir of the teacher's run: required, set by the chain (pipelines.reskd_chain).
  teacher: str | None = setting(None, optional(run_dir), unset=str)
  alpha: float = setting(1.0, non_negative)
  temperature: float = setting(4.0, positive)


@dataclasses.dataclass(frozen=True)
class ResKDSettings(KDSettings):
  """A res-student's fields: the frozen student and earlier res-students (workdirs), and
  what it learns."""
  student: str | None = setting(None, optional(run_dir), unset=str)
  res_students: tuple[str, ...] = setting((), settings_lib.run_dirs)
  residual_target: str = setting('logits',
                                 one_of(names.RESIDUAL_TARGETS, 'residual target'))
  student_features: bool = setting(False, boolean)  # the head also reads z_S's pre-logits


# Every method's settings by its name (`config.method.name`); a method class in
# gkt_jax/methods/ names its settings class (`Method.Settings`).
METHODS: dict[str, type[AnyMethodSettings]] = {
    'baseline': MethodSettings, 'stochastic_depth': StochasticDepthSettings,
    'layerdrop': LayerDropSettings,
    'stimulative': StimulativeSettings, 'gkt': GKTSettings, 'sandwich': SandwichSettings,
    'ekd_fws': EKDFWSSettings,
    'kd': KDSettings, 'reskd': ResKDSettings}


# Evaluators a method's configs run beside the common ones (gkt_jax/config/evals.py):
# EKD-FWSNet's main path, classmate paths and their ensemble.
OWN_EVALS: dict[str, dict[str, dict[str, Any]]] = {
    'ekd_fws': {'paths': {'type': 'classmate_paths'}},
    # LayerDrop: the network pruned at inference by its "every other" rule.
    'layerdrop': {'pruned_depth': dict(names.PRUNED_DEPTH_EVAL)},
}


def defaults(name: str) -> dict[str, Any]:
  """The `config.method` section of method `name` at its defaults (fresh placeholders for
  fields whose default is None)."""
  if name not in METHODS:
    raise ValueError(f'method={name!r} is not one of {tuple(METHODS)}')
  return {'name': name, **METHODS[name].defaults()}


def read(section: Mapping[str, Any]) -> AnyMethodSettings:
  """Checked settings of a `config.method` section, by its `name`."""
  name = section.get('name')
  one_of(tuple(sorted(METHODS)), 'method')('method.name', name)
  return METHODS[name].read(section, 'method', owner=f'method {name!r}', ignore=('name',))
