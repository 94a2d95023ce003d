r"""Our side of the golden cases (cases.py): the method, the model in float64 and its starting
weights; run as a script, the export step of the golden generators.

  .venv/bin/python -m experiments.parity.ours --out /tmp/gkt_parity_weights.npz

writes every case's starting variables as '<case>/params/...' and '<case>/batch_stats/...'
arrays in our names and layout (HWIO kernels, [in, out] dense kernels): our model's variable
tree, filled by `cases.initial_weights` with the scales of our initialisation (numpy draws:
the tests rebuild them in milliseconds, where running Flax's initialisers on a cold
compilation cache takes 5-16 s per network). The generators (stimulative_golden.py,
ekd_golden.py) load that file into the authors' networks."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.parity import cases
from gkt_jax import methods, models


def plain_model(name: str, dtype=jnp.float32) -> models.ResNet:
  """The case's ResNet (the deployed network), computing in `dtype`."""
  case = cases.CASES[name]
  fields = dict(case['model'])
  return models.build_model(fields.pop('arch'), case['num_classes'], dtype=dtype, **fields)


def method(name: str, dtype=jnp.float32, **overrides) -> methods.Method:
  """The case's method around its network (`overrides`: method fields to change)."""
  config = ml_collections.ConfigDict({**cases.CASES[name]['method'], **overrides})
  return methods.get_method(config, plain_model(name, dtype))


def variable_shapes(name: str) -> dict[str, tuple[int, ...]]:
  """{'params/stem_conv/kernel': shape, 'batch_stats/...': shape, ...} of the trained model."""
  case = cases.CASES[name]
  model = method(name).model
  dummy = jax.ShapeDtypeStruct((2, case['side'], case['side'], 3), jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), dummy)
  return {path: tuple(x.shape) for path, x in cases.flatten(dict(abstract)).items()}


def initial_variables(name: str) -> dict:
  """{'params': ..., 'batch_stats': ...}: the case's starting variables (numpy, float64,
  `cases.initial_weights`) in our model's tree."""
  out: dict = {}
  for path, value in cases.initial_weights(name, variable_shapes(name)).items():
    node = out
    *parents, leaf = path.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


_OUT = flags.DEFINE_string('out', '/tmp/gkt_parity_weights.npz', 'The .npz file to write.')


def main(argv: Sequence[str]) -> None:
  del argv
  arrays = {}
  for name in cases.CASES:
    for path, value in cases.flatten(initial_variables(name)).items():
      arrays[f'{name}/{path}'] = value
  np.savez(_OUT.value, **arrays)
  print(f'wrote {len(arrays)} arrays of {len(cases.CASES)} cases to {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
