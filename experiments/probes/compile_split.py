"""Where a method's compile time goes: JAX's tracing, lowering to MLIR and XLA's backend
compile of `bench_step`'s step (its first call), per method, over `rounds` alternating rounds.

  python -m experiments.probes.compile_split baseline,ekd_fws resnet56 2   # methods, arch, rounds

Batch 128, 32x32x3, 1 timed step per call; the ratios are to the first method's, same round.
"""
import collections
import sys

from jax import monitoring

from experiments import bench_step

_split: dict[str, float] = collections.defaultdict(float)
_at_first_call: dict[str, float] = {}


class _Log(list):
  """bench_step's compile log. Its clear() comes just before the step's first call; the sum
  bench_step takes right after it iterates the log, which is when the split is taken (the
  FLOP count and the memory analysis trace and compile again afterwards)."""

  def clear(self):
    _split.clear()
    super().clear()

  def __iter__(self):
    _at_first_call.clear()
    _at_first_call.update(_split)
    return super().__iter__()


def _on_event(name, seconds, **kwargs):
  del kwargs
  if name in bench_step._COMPILE_EVENTS:  # pylint: disable=protected-access
    _split[name.rsplit('/', 1)[-1].removesuffix('_duration')] += seconds
    bench_step._compile_log.append(seconds)  # pylint: disable=protected-access


def main(argv):
  names = argv[1].split(',') if len(argv) > 1 else ['baseline', 'ekd_fws']
  arch = argv[2] if len(argv) > 2 else 'resnet56'
  rounds = int(argv[3]) if len(argv) > 3 else 2
  bench_step._compile_log = _Log()  # pylint: disable=protected-access
  monitoring.register_event_duration_secs_listener(_on_event)
  for r in range(rounds):
    first = None
    for name in names:
      row = bench_step.bench_method(name, arch, 128, 1, 32, 'auto')
      split = dict(_at_first_call)
      total = row['compile_seconds']
      first = first or (total, split)
      parts = ', '.join(f'{k} {v:.2f} s ({v / max(first[1].get(k, v), 1e-9):.2f}x)'
                        for k, v in split.items())
      print(f'round {r + 1} {name:18s} total {total:.2f} s ({total / first[0]:.2f}x): {parts}',
            flush=True)


if __name__ == '__main__':
  main(sys.argv)
