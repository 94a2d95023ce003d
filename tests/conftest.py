"""pytest set-up: absl flags count as parsed (grain's loaders read them), and one persistent
XLA compilation cache for the test run.

The suite compiles the same programs many times (every digits smoke run builds the same
ResNet-20 steps and evaluators; flax's eager initialisers compile one small program per
shape), in two xdist workers and in the subprocess tests. Cached, each is compiled once:
about a fifth off the suite's wall time from an empty cache (measured on 2 cores, see the
README). The cache is keyed by the program, the compile options and the jax/XLA versions, so
it never serves a stale program; it lives in `.jax_test_cache/` (ignored by git, removed by
`make clean`). Set JAX_COMPILATION_CACHE_DIR to use another directory, or to '' to run uncached.
"""

import os
import sys

from absl import flags

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      '.jax_test_cache')
# Environment variables, so that the subprocesses the tests start share the cache too.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

if 'jax' in sys.modules:  # imported before this file (a plugin): it read its environment then
  raise RuntimeError('tests/conftest.py must run before jax is imported, to set its cache')

flags.FLAGS.mark_as_parsed()
