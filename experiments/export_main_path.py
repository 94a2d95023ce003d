r"""Exports a run's main path (the deployed network) as a plain ResNet checkpoint, and checks it.

  python -m experiments.export_main_path --workdir /tmp/ekd_fws_fmnist \
      --out /tmp/ekd_fws_fmnist_main

Writes OUT/checkpoints/<step> (params and BatchNorm statistics of the plain ResNet) and
OUT/model.json, then loads the export into `models.build_model(arch)` (no classmate branch)
and prints, for the export and the architecture's plain model: parameter count, forward
FLOPs per image, and the export's test accuracy next to the main-path accuracy the run
reported (equal when the export is the newest checkpoint of a finished run). The exported
model starts another run with `--config.init=OUT`; research code loads it with
`gkt_jax.train.export.load_exported(OUT)`.
"""

from __future__ import annotations

import json
import os
import warnings

from absl import app, flags, logging
import jax
import numpy as np

from experiments import cli
from gkt_jax import data as data_lib
from gkt_jax import evaluate
from gkt_jax.methods import Baseline
from gkt_jax.train import export

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of the training run.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Directory to write the export to.', required=True)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
_EVAL = flags.DEFINE_bool('eval', True, 'Evaluate the export on the test set.')


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logging(logging.ERROR)  # Orbax warns on read-only restores too
  # Orbax: restoring without target shardings reads them from the file (host arrays here).
  warnings.filterwarnings('ignore', message='Sharding info not provided')
  info = export.export_main_path(_WORKDIR.value, _OUT.value, step=_STEP.value)
  print(f'exported {info["arch"]} ({info["method"]} run, step {info["step"]}) to {_OUT.value}; '
        f'left out {len(info["dropped_variables"])} branch variables: '
        f'{", ".join(info["dropped_variables"]) or "none"}')
  model, variables = export.load_exported(_OUT.value)
  data_cfg = info['data']
  dataset = data_lib.load_dataset(data_cfg['name'], data_dir=data_cfg.get('dir'),
                                  **dict(data_cfg.get('options') or {}))
  plain = export.build_plain_model(info)
  plain_params = jax.eval_shape(lambda: plain.init(
      jax.random.key(0), np.zeros((1,) + tuple(dataset.image_shape), np.float32)))['params']
  shape = tuple(dataset.image_shape)
  print(f'parameters: export {count_params(variables["params"]):,}, plain {info["arch"]} '
        f'{count_params(plain_params):,}')
  print(f'forward FLOPs per image: export {evaluate.forward_flops(model, shape):,.0f}, plain '
        f'{info["arch"]} {evaluate.forward_flops(plain, shape):,.0f}')
  if not _EVAL.value:
    return
  runner = evaluate.EvalRunner(
      model, Baseline({}, model), None, None, mean=dataset.mean, std=dataset.std,
      batch_size=int(info['data'].get('eval_batch_size', 500)),
      eval_source=dataset.eval_batches, num_examples=dataset.num_test)
  runner.variables = variables
  accuracy = runner.deployed_accuracy()
  line = f'test accuracy of the export: {accuracy:.4f}'
  summary_path = os.path.join(_WORKDIR.value, 'summary.json')
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    reported = summary.get('path_acc/main', summary.get('full_accuracy'))
    line += f'; the run reported {reported:.4f} for its main path at step {summary["steps"]}'
  print(line)


if __name__ == '__main__':
  app.run(main)
