"""Starting `train_worker.py` runs in subprocesses (fresh device counts, several processes)."""

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'train_worker.py')
TIMEOUT = 300  # seconds; no test may hang CI

# One persistent compilation cache for the workers this pytest process starts: most tests run
# the same program several times (a reference, an interrupted run, its resumption), and each
# worker would otherwise compile it again (the resume test took 77 s without it, 46 s with
# it). JAX's key covers the program, the compile options with their device assignment, the
# devices and the XLA flags that change code, so a cached executable is the one the worker
# would have compiled. (The tests' own processes use another, `tests/conftest.py`; no test
# asserts on a measured compile time, which a cache hit shortens.)
@functools.cache
def compilation_cache() -> str:
  path = tempfile.mkdtemp(prefix='gkt_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def smoke_config(method: str = 'gkt', fields: dict | None = None):
  """The method's digits ':smoke' config, quiet, no plots, full-network eval only, with
  `fields` ({'dotted.name': value}) set on it."""
  from experiments.configs import common  # pylint: disable=g-import-not-at-top
  config = common.get_config(method, 'digits', 'smoke')
  config.verbose = False
  config.plots = False
  config.evals = {'full': {'type': 'full'}}
  for dotted, value in (fields or {}).items():
    node = config
    *parents, leaf = dotted.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def device_env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
              JAX_COMPILATION_CACHE_DIR=compilation_cache(),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


def start(out: str, workdir: str, overrides: dict, *, devices: int = 1,
          distributed: tuple[int, int, int] | None = None) -> subprocess.Popen:
  """Starts one worker; `distributed` = (process_id, num_processes, port).

  Its stdout and stderr go to files beside `out` (pipes could fill up and stall a process
  that its peers wait for in a collective).
  """
  args = [sys.executable, WORKER, out, workdir, json.dumps(overrides)]
  if distributed:
    args += [str(x) for x in distributed]
  tag = f'{out}.{distributed[0] if distributed else 0}'
  proc = subprocess.Popen(args, cwd=REPO, env=device_env(devices), stdout=open(tag + '.out', 'w'),
                          stderr=open(tag + '.err', 'w'), text=True)
  proc.log_prefix = tag
  return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  """Waits (bounded) for a worker; returns (exit code, stdout, stderr)."""
  try:
    code = proc.wait(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    code = -9
  outputs = []
  for suffix in ('.out', '.err'):
    with open(proc.log_prefix + suffix) as f:
      outputs.append(f.read())
  if code == -9:
    outputs[1] += f'\n[killed after {TIMEOUT}s]'
  return code, outputs[0], outputs[1]


def run(out: str, workdir: str, overrides: dict, *, devices: int = 1,
        expect_code: int = 0) -> dict:
  """Runs one worker to the end; returns its npz contents ({} when it wrote none).

  Raises with its stderr when the exit code is not `expect_code`.
  """
  code, _, stderr = finish(start(out, workdir, overrides, devices=devices))
  if code != expect_code:
    raise AssertionError(f'worker exit code {code}, expected {expect_code}:\n{stderr[-4000:]}')
  return load(out) if os.path.exists(out) else {}


def run_multiprocess(out: str, workdir: str, overrides: dict, *, processes: int,
                     devices_per_process: int) -> dict:
  """`processes` workers on localhost joined by jax.distributed; returns process 0's npz."""
  port = free_port()
  procs = [start(out, workdir, overrides, devices=devices_per_process,
                 distributed=(i, processes, port)) for i in range(processes)]
  results = [finish(p) for p in procs]
  failed = [(i, code, stderr) for i, (code, _, stderr) in enumerate(results) if code != 0]
  if failed:
    raise AssertionError('\n'.join(f'process {i} failed ({code}):\n{stderr[-3000:]}'
                                   for i, code, stderr in failed))
  return load(out)


def load(path: str) -> dict:
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def assert_same_arrays(test, first: dict, second: dict, *, rtol=0.0, atol=0.0,
                       skip=('__step__', '__preempted__')):
  keys = sorted(k for k in first if k not in skip)
  test.assertEqual(keys, sorted(k for k in second if k not in skip))
  for key in keys:
    np.testing.assert_allclose(second[key], first[key], rtol=rtol, atol=atol, err_msg=key)
