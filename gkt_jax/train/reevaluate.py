"""A finished run evaluated again: its final network, with evaluators it did not train with.

  evaluate_run(workdir, evals) -> results   written to workdir/added_evals.json as well
  evaluate_run(workdir, evals, bn_recalibration_images=N)   the same with recomputed
                                             BatchNorm statistics, results under 'bn_recal{N}/'
  added_results(workdir) -> {key: value}     the added results of the run's final network
  final_evaluator(workdir, evals) -> FinalEvaluation   the pieces (also for benchmarks)

The run's newest checkpoint must be the step its summary.json reports (the network the run
deployed), and the deployed network's accuracy must equal the summary's `full_accuracy`
exactly (same checkpoint, same test set, same BatchNorm statistics): otherwise this is not the
network the summary describes and nothing is written. Evaluators run as at the run's final
evaluation (`final=True`; BatchNorm recalibration when the method asks for it), so an added
result is what the run would have reported had its config named the evaluator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
from typing import Any, Callable

import jax
import ml_collections

from gkt_jax.config import evals as evals_config
from gkt_jax.train import checkpoint, export, run_setup

ADDED_EVALS_FILE = 'added_evals.json'
# What every final evaluation reports besides its evaluators' results: not added results.
_RUN_KEYS = ('full_accuracy', 'train_accuracy', 'train_accuracy_examples')


@dataclasses.dataclass
class FinalEvaluation:
  """A finished run's newest checkpoint, ready to evaluate: `evaluate()` runs the evaluators
  of `run.config.evals` as the run's final evaluation does."""
  run: run_setup.Run
  summary: dict
  step: int
  state: Any
  evaluate_state: Callable[..., dict]

  def evaluate(self) -> dict:
    return self.evaluate_state(self.state, final=True)


def _read_summary(workdir: str) -> dict:
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a finished training run')
  with open(path) as f:
    return json.load(f)


def final_evaluator(workdir: str, evals: dict | None = None,
                    method_overrides: dict | None = None) -> FinalEvaluation:
  """The run in `workdir` at its newest checkpoint, with its own evaluators (`evals=None`) or
  `evals` ({name: evaluator config}, e.g. {'pruned_depth': {'type': 'pruned_depth'}}), and
  its method's settings changed by `method_overrides` (evaluation-time ones, e.g.
  {'bn_recalibration_images': 2000})."""
  summary = _read_summary(workdir)
  with checkpoint.read_only(workdir) as source:
    steps = source.all_steps()
  if not steps:
    raise FileNotFoundError(f'{workdir} holds no checkpoint (checkpoints are not committed '
                            'with a run\'s summary: evaluate where it was trained)')
  step = int(steps[-1])
  _, variables, config = export.load_run(workdir, step=step)
  if evals is not None:
    config.evals = ml_collections.ConfigDict(evals)
  for field, value in (method_overrides or {}).items():
    config.method[field] = value
  config.verbose = False
  scratch = tempfile.mkdtemp()  # setup_run makes its workdir; evaluation writes nothing there
  try:
    run = run_setup.setup_run(config, scratch)
  finally:
    os.rmdir(scratch)  # raises if anything was written there
  with_fixed = run_setup.fixed_variables(run)
  evaluate_state = run_setup.make_evaluator(run, with_fixed)
  state = types.SimpleNamespace(**{name: jax.device_put(value, run.replicated)
                                   for name, value in variables.items()})
  return FinalEvaluation(run, summary, step, state, evaluate_state)


def evaluate_run(workdir: str, evals: dict, *,
                 bn_recalibration_images: int | None = None) -> dict:
  """Runs `evals` ({name: evaluator config}) on the final network of the finished run in
  `workdir` and merges their results into workdir/added_evals.json; returns them (the
  deployed network's accuracy, checked against the summary's, left out).

  With `bn_recalibration_images=N` the network is evaluated with BatchNorm statistics
  recomputed on N training images in the run's seed order (the method setting of that name,
  which serves evaluation only) instead of the statistics it trained: every result, the
  deployed network's and the training images' accuracy included, is stored under the prefix
  'bn_recal{N}/' (`evals` may then be empty), and none is checked against the summary.
  """
  recalibrate = bn_recalibration_images is not None
  if recalibrate and (isinstance(bn_recalibration_images, bool)
                      or not isinstance(bn_recalibration_images, int)
                      or bn_recalibration_images < 1):
    raise ValueError(f'bn_recalibration_images={bn_recalibration_images!r}: must be an '
                     'integer >= 1 (training images to recompute the statistics on)')
  if not evals and not recalibrate:
    raise ValueError('evals is empty: name at least one evaluator, e.g. '
                     "{'pruned_depth': {'type': 'pruned_depth'}}")
  checked = evals_config.read(evals) if evals else {}  # bad entries fail before any restore
  overrides = {'bn_recalibration_images': bn_recalibration_images} if recalibrate else None
  final = final_evaluator(workdir, {**evals_config.DEFAULT_EVALS, **evals}, overrides)
  if final.step != final.summary['steps']:
    raise ValueError(f'{workdir}: newest checkpoint is step {final.step}, but the run '
                     f'finished at step {final.summary["steps"]} (summary.json): not the '
                     'network the summary describes')
  results = final.evaluate()
  entries = {name: dict(evals[name]) for name in checked}
  if recalibrate:
    prefix = f'bn_recal{bn_recalibration_images}/'
    added = {prefix + k: v for k, v in results.items() if k != 'train_accuracy_examples'}
    entries = {prefix + name: dict(entry, bn_recalibration_images=bn_recalibration_images)
               for name, entry in {**evals_config.DEFAULT_EVALS, **entries}.items()}
  else:
    if results['full_accuracy'] != final.summary['full_accuracy']:
      raise ValueError(f'{workdir}: the restored network scores full_accuracy='
                       f'{results["full_accuracy"]!r}, its summary '
                       f'{final.summary["full_accuracy"]!r}: not the network (or the '
                       'evaluation) the run reported; nothing written')
    added = {k: v for k, v in results.items() if k not in _RUN_KEYS}
  stored = _stored(workdir, final.summary)
  stored = {'step': final.step, 'evals': {**stored.get('evals', {}), **entries},
            'results': {**stored.get('results', {}), **added}}
  path = os.path.join(workdir, ADDED_EVALS_FILE)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(stored, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return added


def _stored(workdir: str, summary: dict) -> dict:
  """workdir/added_evals.json when it is of the summary's final step, else {} (none, or of
  a run trained again since)."""
  path = os.path.join(workdir, ADDED_EVALS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    stored = json.load(f)
  return stored if stored.get('step') == summary.get('steps') else {}


def added_results(workdir: str, summary: dict | None = None) -> dict:
  """{key: value} that evaluators added to the run in `workdir` report for its final network
  ({} when none was added)."""
  summary = _read_summary(workdir) if summary is None else summary
  return dict(_stored(workdir, summary).get('results', {}))


def added_evals(workdir: str) -> dict:
  """{name: evaluator config} already added to the run in `workdir` (for its final network)."""
  return dict(_stored(workdir, _read_summary(workdir)).get('evals', {}))
