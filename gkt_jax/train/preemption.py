"""Signals that stop a run cleanly: SIGTERM (preemption) and SIGINT (Ctrl-C).

The training loop asks `PreemptionWatcher.requested(step)` after every step; on True it saves a
checkpoint and stops. Multi-process runs take the same decision at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax

from gkt_jax import utils


class PreemptionWatcher:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a request to save a checkpoint and stop.

  The loop asks `requested(step)` after dispatching every step. A second SIGINT exits at
  once (KeyboardInterrupt), for a user who does not want to wait for the save.

  Multi-process runs must stop at the same step everywhere. With JAX's preemption service
  (on by default under `jax.distributed`), SIGTERM is left to it: any process's notice
  spreads to all, and `multihost_utils.reached_preemption_sync_point` names one common step
  without a host sync per step; a SIGINT is forwarded to the service as a SIGTERM. Without
  the service, the processes OR their flags through a tiny all-gather every
  `ALLGATHER_EVERY` steps.
  """

  ALLGATHER_EVERY = 10
  # The preemption service's step ids: one count per `requested` call for the whole process
  # (every process makes the same calls). Training steps would not do: they restart with
  # each run in a process, and a resumed run starts far above the service's first id.
  _sync_calls = 0

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._flag = threading.Event()
    self._previous = {}
    self.signal_name = None
    self._sigint_seen = False  # a second Ctrl-C (not a Ctrl-C after SIGTERM) exits at once
    self._sync_manager = _preemption_sync_manager()
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        if sig == signal.SIGTERM and self._sync_manager is not None:
          continue  # the preemption service's own handler receives it
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self._sigint_seen:
      raise KeyboardInterrupt(f'second {name}: exiting without saving')
    self._sigint_seen = self._sigint_seen or signum == signal.SIGINT
    self.signal_name = self.signal_name or name
    self._flag.set()
    if signum == signal.SIGINT:
      print(f'{name}: saving a checkpoint after the current step (again to exit at once)',
            file=sys.stderr, flush=True)
      if self._sync_manager is not None:  # let every process know, as for a preemption
        os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, step: int) -> bool:
    """Whether to save at `step` and stop; the same answer in every process."""
    if jax.process_count() == 1:
      return self._flag.is_set()
    if self._sync_manager is not None:
      PreemptionWatcher._sync_calls += 1
      stop = utils.multihost_utils().reached_preemption_sync_point(
          PreemptionWatcher._sync_calls)
    elif step % self.ALLGATHER_EVERY:
      return False
    else:
      stop = not utils.all_processes(not self._flag.is_set())  # any process signalled
    if stop:  # another process's signal: its name is not known here
      self.signal_name = self.signal_name or 'SIGTERM'
    return stop

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      if handler is not None:  # None: a handler not installed from Python; leave ours
        signal.signal(sig, handler)
    self._previous = {}


def _preemption_sync_manager():
  """JAX's preemption sync manager of a multi-process run, or None."""
  if jax.process_count() == 1:
    return None
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return getattr(distributed.global_state, 'preemption_sync_manager', None)
