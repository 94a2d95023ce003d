"""pytest set-up: absl flags count as parsed (grain's loaders read them), and a persistent
XLA compilation cache for the tests.

The suite compiles the same programs many times (every digits smoke run builds the same
ResNet-20 steps and evaluators; flax's eager initialisers compile one small program per
shape). Cached, each is compiled once per test process: 11:17 -> 9:46 from an empty cache
(the default suite, 2 cores, 2026-12-02; the README has the CI timing). The cache is keyed by
the program, the compile options and the jax/XLA versions, so it never serves a stale
program. It lives in `.jax_test_cache/<machine>/<xdist worker>` (ignored by git, removed by
`make clean`): one directory per worker, because JAX writes an entry without a lock and a
half-written entry read by another process would stay in the cache, and one per machine
(CPU model and features), because compiled CPU code is not portable. Subprocesses a test
starts inherit it, unless they set their own (`workers.device_env`). Set
JAX_COMPILATION_CACHE_DIR to use another directory, or to '' to run uncached.
"""

import hashlib
import os
import platform
import sys

from absl import flags


def _machine() -> str:
  """A short name for this machine's CPU (model and feature flags)."""
  identity = platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      identity += ''.join(sorted({line for line in f if line.startswith(('model name',
                                                                          'flags'))}))
  except OSError:
    identity += platform.processor()
  return hashlib.sha256(identity.encode()).hexdigest()[:12]


_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      '.jax_test_cache', _machine(),
                      os.environ.get('PYTEST_XDIST_WORKER', 'main'))
# Environment variables, so that the subprocesses the tests start use the cache too. A value
# this file set in the xdist controller (which the workers inherit) is replaced by the
# worker's own; one set by the user is kept.
if os.environ.get('JAX_COMPILATION_CACHE_DIR') in (None, os.environ.get('_GKT_JAX_TEST_CACHE')):
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['_GKT_JAX_TEST_CACHE'] = _CACHE
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

if 'jax' in sys.modules:  # imported before this file (a plugin): it read its environment then
  raise RuntimeError('tests/conftest.py must run before jax is imported, to set its cache')

flags.FLAGS.mark_as_parsed()
