r"""Trains a ResKD chain (teacher, student, res-students) and measures its accuracy vs cost.

  python -m experiments.reskd_pipeline --config experiments/configs/reskd/fashion_mnist.py \
      --workdir workdirs/fmnist_reskd

Each stage is a run of the trainer in WORKDIR/<stage> (teacher, student, res1, ...); running
the command again skips finished stages and resumes an interrupted one. At the end it writes
WORKDIR/summary.json, WORKDIR/accuracy_vs_cost.md and WORKDIR/plots/accuracy_vs_cost.png
(see gkt_jax/pipelines/reskd_chain.py). --analyze_only re-measures a trained chain.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'ResKD chain config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Root directory of the chain.')
_ANALYZE_ONLY = flags.DEFINE_bool('analyze_only', False, 'Only measure a trained chain.')
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False,
                                  'Print the resolved config (every field) and exit.')


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}: every setting is a flag (--config.<field>=...)')
  config = _CONFIG.value
  if 'res_student' not in config:
    cli.fail(f'--config={flags.FLAGS["config"].config_filename}: not a ResKD chain config (no '
             'res_student section); a run config runs with python -m experiments.main')
  cli.resolve_duration_pairs(config, config_flags.get_override_values(flags.FLAGS['config']))
  if _PRINT_CONFIG.value:
    print(config)
    return
  cli.check_workdir(_WORKDIR.value)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
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
