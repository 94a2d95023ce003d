"""A training run in its own process, for tests that need fresh device counts or processes.

  python tests/train_worker.py OUT.npz WORKDIR '<json overrides>' [PROCESS_ID NUM_PROCESSES PORT]

Set XLA_FLAGS=--xla_force_host_platform_device_count=N in the environment first. The
overrides are a JSON dict {"dotted.field": value} applied to the method's digits smoke config
({"method": "gkt"} picks the method; {"signal_at_step": [k, "SIGTERM"]} makes the process
send itself that signal right after logging step k, {"signal_at_device_step": [k, "SIGTERM"]}
once the device has finished step k). With the last three arguments, the process joins a
multi-process run through jax.distributed (gloo collectives on CPU). Process 0 writes
OUT.npz: the final params and batch stats (flattened by path) and the logged losses.
"""

import json
import os
import sys

import jax


def main(out, workdir, overrides, process_id=None, num_processes=None, port=None):
  if process_id is not None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                               num_processes=int(num_processes), process_id=int(process_id),
                               initialization_timeout=120)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gkt_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  import workers  # pylint: disable=g-import-not-at-top  (tests/, this script's folder)

  overrides = json.loads(overrides)
  signal_at = overrides.pop('signal_at_step', None)
  if signal_at is not None:
    _signal_self_after_logging(*signal_at)
  device_signal_at = overrides.pop('signal_at_device_step', None)
  if device_signal_at is not None and process_id in (None, '0'):  # process 0 only
    _signal_self_at_device_step(*device_signal_at)
  method = overrides.pop('method', 'gkt')
  verbose = bool(overrides.pop('verbose', False))
  config = workers.smoke_config(method, overrides)
  config.verbose = verbose
  summary, state = train_and_evaluate(config, workdir, return_state=True)
  if jax.process_index() == 0:
    arrays = {}
    for name in ('params', 'batch_stats'):
      for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(state, name))[0]:
        arrays[name + jax.tree_util.keystr(path)] = np.asarray(leaf.addressable_data(0))
    metrics = os.path.join(workdir, 'metrics.jsonl')  # none when no step was logged
    with open(metrics) if os.path.exists(metrics) else open(os.devnull) as f:
      losses = [json.loads(line)['loss'] for line in f if '"loss"' in line]
    np.savez(out, **arrays, __losses__=np.asarray(losses, np.float64),
             __step__=np.asarray(summary.get('step', summary.get('steps'))),
             __preempted__=np.asarray(bool(summary.get('preempted', False))))
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}),
          flush=True)
  if process_id is not None:
    jax.distributed.shutdown()


def _signal_self_after_logging(step, signal_name):
  """Sends `signal_name` to this process once the row of training step `step` is written."""
  import signal  # pylint: disable=g-import-not-at-top
  from gkt_jax.train import reporting  # pylint: disable=g-import-not-at-top
  write = reporting.MetricWriter.write

  def write_then_signal(self, row_step, values):
    write(self, row_step, values)
    if row_step == step and 'loss' in values:
      os.kill(os.getpid(), getattr(signal, signal_name))

  reporting.MetricWriter.write = write_then_signal


def _signal_self_at_device_step(step, signal_name):
  """Sends `signal_name` to this process as soon as the device has finished training step
  `step` (a thread waits on that step's outputs), however far ahead the host loop is."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from gkt_jax.train import trainer  # pylint: disable=g-import-not-at-top
  compile_train_step = trainer.compile_train_step
  outputs, dispatched = [], threading.Condition()

  def signal_when_done():
    with dispatched:
      dispatched.wait_for(lambda: len(outputs) >= step)
    jax.block_until_ready(outputs[step - 1])
    os.kill(os.getpid(), getattr(signal, signal_name))

  def compile_watched_step(*args, **kwargs):
    train_step = compile_train_step(*args, **kwargs)

    def watched_step(state, *inputs):
      state, measurements = train_step(state, *inputs)
      with dispatched:
        outputs.append(measurements)
        dispatched.notify()
      return state, measurements

    return watched_step

  trainer.compile_train_step = compile_watched_step
  threading.Thread(target=signal_when_done, daemon=True).start()


if __name__ == '__main__':
  main(*sys.argv[1:])
