r"""Trains a ResKD chain (teacher, student, res-students) and measures its accuracy vs cost.

  python -m experiments.reskd_pipeline \
      --config experiments/configs/reskd_chain.py:dataset=fashion_mnist \
      --workdir workdirs/fmnist_reskd

Each stage is a run of the trainer in WORKDIR/<stage> (teacher, student, res1, ...); running
the command again skips finished stages and resumes an interrupted one. At the end it writes
WORKDIR/summary.json, WORKDIR/accuracy_vs_cost.md and WORKDIR/plots/accuracy_vs_cost.png
(see gkt_jax/pipelines/reskd_chain.py). --analyze_only re-measures a trained chain.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'ResKD chain config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Root directory of the chain.')
_ANALYZE_ONLY = flags.DEFINE_bool('analyze_only', False, 'Only measure a trained chain.')
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False,
                                  'Print the resolved config (every field) and exit.')


def main(argv):
  config = cli.start(argv, _CONFIG, section='res_student', kind='ResKD chain',
                     other='experiments.main (a run)', print_config=_PRINT_CONFIG.value,
                     workdir=_WORKDIR.value)
  if config is None:
    return
  # pylint: disable=g-import-not-at-top
  from gkt_jax import data
  from gkt_jax.pipelines import reskd_chain
  from gkt_jax.train import checkpoint, validate
  try:
    if _ANALYZE_ONLY.value:
      reskd_chain.analyze_chain(config, _WORKDIR.value)
    else:
      cli.exit_if_preempted(reskd_chain.run_chain(config, _WORKDIR.value))
  except (FileNotFoundError, data.DataError, validate.ConfigError,
          checkpoint.ResumeMismatchError) as e:
    cli.fail(str(e))
  except KeyboardInterrupt:
    print('stopped at once by Ctrl-C: finished stages and the last checkpoint are kept; run '
          'the same command again to continue', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
