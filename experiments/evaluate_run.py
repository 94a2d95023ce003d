r"""Evaluates a finished run's final network with evaluators its config did not name.

  python -m experiments.evaluate_run --workdir results/fmnist_scarce/gkt/seed0 \
      --evals pruned_depth
  python -m experiments.evaluate_run --workdir W \
      --evals_json '{"pruned": {"type": "pruned_depth", "periods": [2, 3]}}'

`--evals` names evaluator types, each at its defaults and as its own entry; `--evals_json`
gives whole entries as `config.evals` takes them. `--bn_recalibration_images N` evaluates with
BatchNorm statistics recomputed on N training images (results under 'bn_recal<N>/', the
deployed network's accuracy included, not checked against the summary). The run's newest checkpoint must be its
final step, and the restored network must score the summary's `full_accuracy` exactly (or
nothing is written). The results go to WORKDIR/added_evals.json (merged with earlier ones)
and are printed as one JSON line; the suite reports read them beside the summary's
(`python -m experiments.reproduce --evaluate_only` adds a suite's `added_evals` to every
finished cell).
"""

from __future__ import annotations

import json
import warnings

from absl import app, flags, logging

from experiments import cli
from gkt_jax.config import evals as evals_config
from gkt_jax.train import reevaluate

_WORKDIR = flags.DEFINE_string('workdir', None, 'A finished training run (config.json, '
                               'summary.json and its final checkpoint).')
_EVALS = flags.DEFINE_list('evals', None, 'Evaluator types to add, each at its defaults: '
                           f'{", ".join(sorted(evals_config.EVALUATORS))}.')
_EVALS_JSON = flags.DEFINE_string('evals_json', None, 'Evaluator entries as JSON, '
                                  '{name: {"type": ..., field: value}}.')
_RECAL = flags.DEFINE_integer('bn_recalibration_images', None,
                              'Evaluate with BatchNorm statistics recomputed on this many '
                              'training images instead of the run\'s own; results under '
                              '"bn_recal<N>/" (then --evals may be left out).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir: give a finished training run')
  evals = ({} if _RECAL.value is not None and not (_EVALS.value or _EVALS_JSON.value)
           else cli.requested_evals(_EVALS.value, _EVALS_JSON.value))
  cli.quiet_logging(logging.ERROR)  # Orbax warns on read-only restores
  warnings.filterwarnings('ignore', message='Sharding info not provided')
  try:
    results = reevaluate.evaluate_run(_WORKDIR.value, evals,
                                      bn_recalibration_images=_RECAL.value)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(str(e))
  print(json.dumps(results), flush=True)


if __name__ == '__main__':
  app.run(main)
