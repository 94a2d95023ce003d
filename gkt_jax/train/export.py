"""Deployment: a run's main path written as a plain ResNet checkpoint, and read back.

The export holds the variables of the network the run's method deploys
(`Method.deployed_variables`: for EKD-FWSNet the main path of its ClassmateResNet, for the
others the trained network itself), which must be exactly those of
`models.build_model(config.model.arch, ...)`.

  export_main_path(workdir, out_dir) -> info    out_dir/checkpoints/<step>, out_dir/model.json
  load_exported(out_dir) -> (model, variables)  a plain ResNet and its variables
  load_run(workdir) -> (model, variables, config)  a run's trained network
A run can also start from an export: `config.init=out_dir`.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gkt_jax import methods, models
from gkt_jax.train import checkpoint

MODEL_FILE = 'model.json'


def _read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a training run\'s workdir')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def export_main_path(workdir: str, out_dir: str, *, step: int | None = None) -> dict:
  """Writes the main path of the run in `workdir` (its newest checkpoint, or `step`).

  Returns the info also written to out_dir/model.json: arch, model fields, num_classes,
  the run's data config, source workdir and step, and the names of the variables left out.
  """
  config = _read_config(workdir)
  with checkpoint.read_only(workdir) as source:
    steps = source.all_steps()
    if not steps:
      raise FileNotFoundError(f'{workdir} holds no checkpoint to export')
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(f'step={step} is not a checkpoint of {workdir}; it has {steps}')
    tree = source.restore_raw(step)
  method = methods.REGISTRY.get(config.method.name, methods.Method)
  params = method.deployed_variables(tree['params'])
  batch_stats = method.deployed_variables(tree.get('batch_stats', {}))
  dropped = sorted(set(tree['params']) - set(params))
  model_cfg = dict(config.model)
  info = {'arch': model_cfg.pop('arch'), 'model': model_cfg,
          'num_classes': int(np.shape(params['head']['kernel'])[-1]),
          'data': config.data.to_dict(), 'method': config.method.name,
          'source_workdir': os.path.abspath(workdir), 'step': int(step),
          'dropped_variables': dropped}
  # The weights must fit the plain network exactly (names, shapes), or this is no export.
  fitted = _fitted(build_plain_model(info), {'params': params, 'batch_stats': batch_stats},
                   workdir)
  params, batch_stats = fitted['params'], fitted['batch_stats']
  os.makedirs(out_dir, exist_ok=True)
  target = checkpoint.Checkpointer(os.path.join(out_dir, 'checkpoints'), async_save=False,
                                   max_to_keep=None)
  target.save_weights(step, params, batch_stats,
                      {'identity': checkpoint.identity_fields(config), 'export': info})
  target.wait_until_finished()
  target.close()
  with open(os.path.join(out_dir, MODEL_FILE), 'w') as f:
    json.dump(info, f, indent=2)
  return info


def _dummy_input(params) -> jax.Array:
  """A 1-image input f32[1, H, W, C] that builds variables of the shapes in `params`.

  C is the stem's input channels. A ResNet's variables do not depend on H and W (32 here);
  a ViT's do (its patch side and position grid are fixed by its init input), so for
  weights with a 'position' embedding of T tokens and p x p patches the input is the square
  sqrt(T) p a side that the run trained at (every dataset's images are square).
  """
  kernel = np.shape(params['stem_conv']['kernel'])
  side = 32
  if 'position' in params:
    tokens = int(np.shape(params['position'])[1])
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
      raise ValueError(f"params['position'] holds {tokens} tokens, not a square grid: the "
                       'input size the network was built at is not known')
    side = grid * int(kernel[0])
  return jnp.zeros((1, side, side, kernel[2]), jnp.float32)


def build_plain_model(info: dict) -> models.ResNet:
  return models.build_model(info['arch'], info['num_classes'], **info['model'])


def load_run(workdir: str, *, step: int | None = None):
  """(model, {'params', 'batch_stats'} as host arrays, config) of a training run's newest
  checkpoint (or `step`): the network its method trained (e.g. another run's fixed
  network)."""
  config = _read_config(workdir)
  with checkpoint.read_only(workdir) as source:
    steps = source.all_steps()
    if not steps:
      raise FileNotFoundError(f'{workdir} holds no checkpoint (has its run been trained?)')
    tree = source.restore_raw(steps[-1] if step is None else step)
  plain = models.from_config(config.model, int(np.shape(tree['params']['head']['kernel'])[-1]))
  model = methods.get_method(config.method, plain).model
  return model, _fitted(model, tree, workdir), config


def _fitted(model, tree: dict, source: str) -> dict:
  """The checkpoint's params and batch stats, checked against (and cast to) the model's."""
  like = jax.eval_shape(lambda: model.init(jax.random.key(0), _dummy_input(tree['params']),
                                           train=False))
  params, batch_stats = checkpoint.fit_variables(
      tree['params'], tree.get('batch_stats', {}), like['params'], like.get('batch_stats', {}),
      source)
  return {'params': params, 'batch_stats': batch_stats}


def load_exported(out_dir: str):
  """(plain ResNet, {'params', 'batch_stats'}) of an export written by `export_main_path`."""
  path = os.path.join(out_dir, MODEL_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {out_dir} is not an export of '
                            'export_main_path')
  with open(path) as f:
    info = json.load(f)
  model = build_plain_model(info)
  with checkpoint.read_only(out_dir) as source:
    tree = source.restore_raw(source.latest_step())
  return model, _fitted(model, tree, out_dir)
