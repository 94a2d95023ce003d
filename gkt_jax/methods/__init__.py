"""Training methods: each gives gradients for a batch and its test-time predictor.

The trainer knows them only through `get_method(config.method, model)`; the model it
trains is `method.model` (a method may build it around the configured one).
"""

from __future__ import annotations

from gkt_jax.methods.base import Method, MethodSettings, run_model
from gkt_jax.methods.baseline import Baseline
from gkt_jax.methods.ekd_fws import EKDFWS
from gkt_jax.methods.gkt import GKT
from gkt_jax.methods.layerdrop import LayerDrop
from gkt_jax.methods.reskd import KDStudent, ResStudent
from gkt_jax.methods.sandwich import Sandwich
from gkt_jax.methods.stimulative import Stimulative
from gkt_jax.methods.stochastic_depth import StochasticDepth

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Baseline, StochasticDepth, LayerDrop, Stimulative, GKT, Sandwich,
                              EKDFWS, KDStudent, ResStudent)}


def get_method(config, model) -> Method:
  """Builds the method named by `config.name` (a `config.method` ConfigDict)."""
  name = config.get('name', None)
  if name not in REGISTRY:
    raise ValueError(f'method.name={name!r} is not one of {tuple(REGISTRY)}')
  return REGISTRY[name].build(config, model)


__all__ = ['EKDFWS', 'GKT', 'Baseline', 'KDStudent', 'LayerDrop', 'Method', 'MethodSettings',
           'REGISTRY',
           'ResStudent', 'Sandwich', 'Stimulative', 'StochasticDepth', 'get_method', 'run_model']
