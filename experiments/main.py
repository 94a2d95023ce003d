r"""Trains and evaluates one method, as a config file describes.

  python -m experiments.main --config experiments/configs/digits.py:method=gkt \
      --workdir /tmp/gkt_digits [--config.total_epochs=10 ...]

The config file's `get_config(arg)` takes the text after a colon (`digits.py:method=gkt,smoke`).
`--print_config` prints the resolved config (every field, overrides applied) and exits.
A duration or cadence given on the command line replaces the other field of its pair
(`--config.total_steps=30` on a config that sets total_epochs).

Running the same command again resumes from `workdir/checkpoints`. SIGTERM or Ctrl-C saves a
checkpoint after the current step and exits with status 128 + the signal's number (143,
130); a second Ctrl-C exits at once. Mistakes on the command line, in the config or in the
data give one `error: ...` line and exit status 2.

Multi-host: `--jax_distributed` calls `jax.distributed.initialize()` before anything else,
with `--coordinator_address`, `--num_processes` and `--process_id` when given (else the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, else
JAX's own cluster detection: Cloud TPU, SLURM, ...). On CPU, processes talk through gloo.
"""

import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes its outputs.')
_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False,
                                 'Call jax.distributed.initialize() (multi-host runs).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (multi-host).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False,
                                  'Print the resolved config (every field) and exit.')
flags.mark_flag_as_required('config')


def _env_int(name):
  value = os.environ.get(name)
  return int(value) if value not in (None, '') else None


def initialize_distributed() -> None:
  """`jax.distributed.initialize` from flags, then JAX_* variables, then auto-detection."""
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = {
      'coordinator_address': _COORDINATOR.value or os.environ.get('JAX_COORDINATOR_ADDRESS'),
      'num_processes': (_NUM_PROCESSES.value if _NUM_PROCESSES.value is not None
                        else _env_int('JAX_NUM_PROCESSES')),
      'process_id': (_PROCESS_ID.value if _PROCESS_ID.value is not None
                     else _env_int('JAX_PROCESS_ID')),
  }
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  # Cross-process collectives of the CPU backend (tests, CPU clusters); GPUs/TPUs ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  logging.warning('jax.distributed: process %d of %d, %d local / %d global devices',
                  jax.process_index(), jax.process_count(), jax.local_device_count(),
                  jax.device_count())


def _leave_at_once(message: str, status: int) -> None:
  """Prints `message` on stderr and exits with `status` without the interpreter's shutdown."""
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(status)


def main(argv):
  config = cli.start(argv, _CONFIG, section='method', kind='run',
                     other='experiments.reskd_pipeline (a ResKD chain)',
                     print_config=_PRINT_CONFIG.value, workdir=_WORKDIR.value)
  if config is None:
    return
  if _DISTRIBUTED.value:
    initialize_distributed()
  # pylint: disable=g-import-not-at-top
  from gkt_jax import data
  from gkt_jax.train import checkpoint, train_and_evaluate, validate
  try:
    result = train_and_evaluate(config, _WORKDIR.value)
  except checkpoint.UnreadableCheckpointsError as e:
    # The failed reads of every checkpoint can still be completing in TensorStore's threads
    # into Orbax's closed event loop while the interpreter shuts down, each a traceback that
    # no hook catches once shutdown has begun. Nothing was written: leave at once.
    _leave_at_once(f'error: {e}', cli.EXIT_USAGE)
  except (FileNotFoundError, data.DataError, validate.ConfigError,
          checkpoint.ResumeMismatchError) as e:
    # Missing or corrupt data, a bad config, a resume with another model: the message says.
    cli.fail(str(e))
  except KeyboardInterrupt:  # a second Ctrl-C, or one after training (the first one saves)
    # Not sys.exit: the interpreter's exit would first wait for the device work already
    # queued (all of an evaluation's batches), minutes for a long final evaluation.
    _leave_at_once('stopped at once by Ctrl-C: the last checkpoint is kept; run the same '
                   'command again to resume', 128 + signal.SIGINT)
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.shutdown()
  cli.exit_if_preempted(result)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
