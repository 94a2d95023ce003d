"""`config.evals`: the evaluators of a run, `name: dict(type=..., ...)`, one settings class
per evaluator type (`EVALUATORS`) with its fields, defaults and checks.

  read(config.get('evals'))  # {'full': EvalSettings(type='full', final_only=False), ...}
  settings.arguments()       # the entry as gkt_jax.evaluate.run_evaluators takes it

A run without `evals` evaluates the full network (`DEFAULT_EVALS`) and runs its method's own
evaluators. `final_only=True` runs an
evaluator once, after training. The subnet evaluators draw subnets with a sampler of
gkt_jax.masks and take that sampler's keyword argument (drop_prob, gamma or max_shortening).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import ml_collections

from gkt_jax import settings as settings_lib
from gkt_jax.config import method as method_config
from gkt_jax.config import names
from gkt_jax.settings import boolean, integer, one_of, optional, setting

DEFAULT_EVALS = {'full': {'type': 'full'}}
_Section = (Mapping, ml_collections.ConfigDict)


@dataclasses.dataclass(frozen=True)
class EvalSettings(settings_lib.Settings):
  """An evaluator's type (None: the entry's name) and when it runs."""
  type: str | None = setting(None, optional(settings_lib.text), unset=str)
  final_only: bool = setting(False, boolean)

  def check_stage_sizes(self, path: str, stage_sizes: Sequence[int]) -> None:
    """Rules between these fields and the network's blocks per stage (subclasses)."""
    del path, stage_sizes

  def arguments(self) -> dict[str, Any]:
    """The entry as the evaluators take it: every field, those at None left out."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class SampledEvalSettings(EvalSettings):
  """Subnets drawn by `sampler` from the key `seed`; the sampler's keyword argument (None:
  its default) is accepted only with that sampler."""
  sampler: str = setting('bernoulli', one_of(names.SAMPLERS, 'sampler'))
  seed: int = setting(0, integer(0))
  drop_prob: float | None = setting(None, optional(names.SAMPLER_CHECKS['drop_prob']),
                                    unset=float)
  gamma: float | None = setting(None, optional(names.SAMPLER_CHECKS['gamma']), unset=float)
  max_shortening: tuple[int, ...] | None = setting(
      None, names.SAMPLER_CHECKS['max_shortening'], unset=tuple)

  def check(self, path: str) -> None:
    accepted = tuple(sorted(
        set(self.names()) - set(names.SAMPLER_CHECKS) | set(names.SAMPLER_KWARGS[self.sampler])))
    for name in names.SAMPLER_CHECKS:
      value = getattr(self, name)
      if value is not None and name not in names.SAMPLER_KWARGS[self.sampler]:
        settings_lib.fail(f'{path}.{name}', value, f'not a field of evaluator {self.type!r} '
                          f'with sampler={self.sampler!r}; accepted: {accepted}')

  def check_stage_sizes(self, path: str, stage_sizes: Sequence[int]) -> None:
    names.check_max_shortening(f'{path}.max_shortening', self.max_shortening, stage_sizes)


@dataclasses.dataclass(frozen=True)
class SubnetChainsSettings(SampledEvalSettings):
  """Mean accuracy of the level-1..G subnets over `num_chains` nested chains."""
  num_chains: int = setting(8, integer(1))
  levels: int = setting(names.DEFAULT_LEVELS, integer(1))


@dataclasses.dataclass(frozen=True)
class DepthCurveSettings(SampledEvalSettings):
  """Accuracy by number of kept blocks over `num_subnets` subnets (stimulative training's
  prefix sampler by default)."""
  sampler: str = setting('prefix', one_of(names.SAMPLERS, 'sampler'))
  seed: int = setting(1, integer(0))
  num_subnets: int = setting(16, integer(1))


@dataclasses.dataclass(frozen=True)
class NestedDepthCurveSettings(SubnetChainsSettings):
  """Accuracy by number of kept blocks over every subnet of `num_chains` nested chains."""
  seed: int = setting(2, integer(0))


@dataclasses.dataclass(frozen=True)
class PrunedDepthSettings(EvalSettings):
  """Accuracy with every `period`-th droppable block pruned (LayerDrop's "every other" rule
  at period 2, `masks.pruned_every_other`), one result per period; no fine-tuning."""
  periods: tuple[int, ...] = setting((2,), settings_lib.positive_ints)


# Every evaluator type's settings (gkt_jax.evaluate.EVALUATORS runs them).
EVALUATORS: dict[str, type[EvalSettings]] = {
    'full': EvalSettings, 'subnet_chains': SubnetChainsSettings,
    'depth_curve': DepthCurveSettings, 'nested_depth_curve': NestedDepthCurveSettings,
    'block_deletion': EvalSettings, 'classmate_paths': EvalSettings,
    'pruned_depth': PrunedDepthSettings}


def read_one(name: str, section: Any) -> EvalSettings:
  """Checked settings of the entry `config.evals.<name>` (its type defaults to `name`)."""
  path = f'evals.{name}'
  if not isinstance(section, _Section):
    settings_lib.fail(path, section, 'must be a dict(type=..., ...) of evaluator arguments')
  kind = section.get('type', name)
  one_of(tuple(sorted(EVALUATORS)), 'evaluator type')(f'{path}.type', kind)
  fields = dict(section.items(), type=kind)
  return EVALUATORS[kind].read(fields, path, owner=f'evaluator {kind!r}')


def read(evals: Mapping[str, Any] | None, method: str | None = None
         ) -> dict[str, EvalSettings]:
  """Checked settings of every entry of `config.evals`; None: `DEFAULT_EVALS` and the
  method's own evaluators (`method_config.OWN_EVALS`, e.g. EKD-FWSNet's paths)."""
  if evals is None:
    evals = {**DEFAULT_EVALS, **method_config.OWN_EVALS.get(method, {})}
  if not isinstance(evals, _Section):
    settings_lib.fail('evals', evals, 'must be a ConfigDict of evaluator dicts')
  return {name: read_one(name, section) for name, section in evals.items()}
