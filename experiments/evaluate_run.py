r"""Evaluates a finished run's final network with evaluators its config did not name.

  python -m experiments.evaluate_run --workdir results/fmnist_scarce/gkt/seed0 \
      --evals pruned_depth
  python -m experiments.evaluate_run --workdir W \
      --evals_json '{"pruned": {"type": "pruned_depth", "periods": [2, 3]}}'

`--evals` names evaluator types, each at its defaults and as its own entry; `--evals_json`
gives whole entries as `config.evals` takes them. The run's newest checkpoint must be its
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir: give a finished training run')
  evals = cli.requested_evals(_EVALS.value, _EVALS_JSON.value)
  cli.quiet_logging(logging.ERROR)  # Orbax warns on read-only restores
  warnings.filterwarnings('ignore', message='Sharding info not provided')
  try:
    results = reevaluate.evaluate_run(_WORKDIR.value, evals)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(str(e))
  print(json.dumps(results), flush=True)


if __name__ == '__main__':
  app.run(main)
