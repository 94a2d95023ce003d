r"""Times a finished run's evaluation against its training step.

  python -m experiments.bench_eval --workdir results/fmnist_long/gkt/seed0 --repeats 2

Restores the run's newest checkpoint, runs its configured evaluators on its test set as its
final evaluation does (`final=True`: every evaluator; BatchNorm recalibration when its method
asks for it), `--repeats` times, and prints one JSON line:
  first_seconds           the first evaluation, compilation included (as a run's final one)
  seconds                 the mean of the others (compiled)
  networks                test-set forwards of one evaluation (the deployed network, each
                          chain's levels, each depth curve's distinct subnets with its
                          full-network point, each deleted block, EKD's paths)
  eval_images_per_second  test images x networks / seconds
  train_images_per_second the run's training step from its summary: batch / seconds_per_step
  eval_over_train         eval_images_per_second / train_images_per_second (> 1: a test image
                          costs less than a training image, as a forward costs less than a
                          forward and backward)
  eval_fraction_of_run    the run's evaluation seconds (its summary's final and intermediate
                          ones; intermediate: 0 in summaries written before they were
                          recorded, and since the last start of a resumed run) over its wall
                          time (training, compilation and evaluation)
  eval_fraction_if_now    the same run with its final evaluation taking `first_seconds`
Run it with another checkout's library first on the PYTHONPATH to time that code on the same
checkpoint (docs/results.md, "Evaluation and input speed").
"""

from __future__ import annotations

import json
import time

from absl import app, flags, logging
import numpy as np

from experiments import cli
from gkt_jax.train import reevaluate

# Not required=True: a required flag would fail every flag check of a process that merely
# imports this module (the tests import every entry point).
_WORKDIR = flags.DEFINE_string('workdir', None, 'A finished training run (config.json, '
                               'summary.json and a checkpoint).')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Evaluations timed (the first compiles).')


def _networks(results: dict, num_chains: int) -> int:
  """Test-set forwards behind an evaluation's results: the deployed network, every subnet the
  evaluators ran (a depth curve's distinct subnets, its full-network point included; each
  chain's levels) and EKD-FWSNet's paths."""
  paths = [k for k in results if k.startswith('path_acc/') and k != 'path_acc/ensemble']
  levels = [k for k in results if k.startswith('subnet_acc/level')]
  return (('full_accuracy' in results) + len(results.get('block_deletion', ()))
          + sum(n for key in ('depth_curve', 'nested_depth_curve')
                for _, _, n in results.get(key, ()))
          + len(levels) * num_chains + len(paths))


def bench(workdir: str, repeats: int) -> dict:
  final = reevaluate.final_evaluator(workdir)
  run, summary = final.run, final.summary
  seconds = []
  for _ in range(max(repeats, 2)):
    start = time.perf_counter()
    results = final.evaluate()
    seconds.append(time.perf_counter() - start)
  chains = [dict(c).get('num_chains', 8) for c in dict(run.config.evals).values()
            if dict(c).get('type') == 'subnet_chains']
  networks = _networks(results, chains[0] if chains else 0)
  steady = float(np.mean(seconds[1:]))
  train_rate = summary['batch_size'] / summary['seconds_per_step']
  eval_rate = run.dataset.num_test * networks / steady
  spent = summary.get('eval_seconds', 0.0) + summary.get('intermediate_eval_seconds', 0.0)
  wall = summary['train_seconds'] + summary['compile_seconds'] + spent
  now = spent - summary.get('eval_seconds', 0.0) + seconds[0]
  return {
      'workdir': workdir, 'method': summary['method'], 'arch': summary['arch'],
      'test_images': run.dataset.num_test, 'networks': networks,
      'first_seconds': seconds[0], 'seconds': steady,
      'eval_images_per_second': eval_rate, 'train_images_per_second': train_rate,
      'eval_over_train': eval_rate / train_rate,
      'eval_fraction_of_run': spent / wall,
      'eval_fraction_if_now': now / (wall - spent + now),
      'full_accuracy': results['full_accuracy'],
      'same_results_as_summary': all(summary.get(k) == v for k, v in results.items()),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir: give a finished training run')
  cli.quiet_logging(logging.ERROR)  # Orbax warns on read-only restores
  print(json.dumps(bench(_WORKDIR.value, _REPEATS.value)), flush=True)


if __name__ == '__main__':
  app.run(main)
