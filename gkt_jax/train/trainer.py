"""`train_and_evaluate(config, workdir)`: the method-agnostic training loop (the step:
gkt_jax/train/step.py; the run's parts: gkt_jax/train/run_setup.py)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np

from gkt_jax import data as data_lib
from gkt_jax.train import checkpoint, preemption, reporting, validate
from gkt_jax.train.run_setup import (Run, fixed_identity, fixed_variables, make_evaluator,
                                     setup_run)
from gkt_jax.train.step import compile_train_step, init_state, replicate


MAX_STEPS_IN_FLIGHT = 2

def _scalars(measurements) -> dict[str, float]:
  return {k: float(v) for k, v in measurements.items() if np.ndim(v) == 0}


def _restore_or_init(config, settings, state, ckpt, log, method):
  """Resume order: this workdir, then config.resume, then config.init (weights), then scratch.

  Returns (state, meta): meta is the restored checkpoint's JSON ({} when starting fresh).
  """
  if ckpt is not None:
    restored, meta = ckpt.restore(state, config=config)
    if restored is not None:
      log(f'resumed from {ckpt.directory} at step {meta["step"]}')
      return restored, meta
  if settings.resume:
    with checkpoint.read_only(settings.resume) as source:
      restored, meta = source.restore(state, config=config)
    if restored is None:
      raise FileNotFoundError(f'config.resume={config.resume!r} holds no checkpoint')
    log(f'resumed from config.resume={config.resume} at step {meta["step"]}')
    return restored, meta
  if settings.init:
    with checkpoint.read_only(settings.init) as source:
      params, batch_stats, step, notes = source.restore_weights(
          state.params, state.batch_stats, adapt=method.adapt_init_weights)
    sharding = jax.tree.leaves(state.params)[0].sharding
    log(f'initialised params and batch stats from config.init={config.init} (step {step})'
        + (': ' + ', '.join(notes) if notes else ''))
    return state.replace(params=replicate(params, sharding),
                         batch_stats=replicate(batch_stats, sharding)), {}
  return state, {}


class RunClock:
  """The training seconds of a workdir: earlier (preempted) runs, plus this run's steps
  after the first (compiled) one, evaluations excluded."""

  def __init__(self, prior_train_seconds: float):
    self.prior = prior_train_seconds
    self.compile_start = time.perf_counter()
    self.compile_seconds = 0.0
    self.train_start = None
    self.eval_seconds = 0.0  # intermediate evaluations

  def first_step_done(self) -> None:
    self.compile_seconds = time.perf_counter() - self.compile_start
    self.train_start = time.perf_counter()

  def train_seconds(self) -> float:
    if self.train_start is None:
      return self.prior
    return self.prior + time.perf_counter() - self.train_start - self.eval_seconds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       return_state: bool = False):
  """Trains `config.method` on `config.data` and evaluates it; returns the summary dict.

  With `return_state`, returns (summary, final TrainState) instead.

  Writes to workdir: config.json, metrics.jsonl, checkpoints/, summary.json and plots/*.png
  (files by process 0 only). Resumes from workdir/checkpoints when present. On SIGTERM it
  saves a checkpoint at the current step and returns {'preempted': True, 'step': ...,
  'signal': 'SIGTERM'}; SIGINT (Ctrl-C) the same, a second SIGINT exits at once.
  """
  # SIGTERM is caught from the start (set-up, compile and training); handlers, checkpoint
  # threads and data threads are released however the run ends.
  watcher = preemption.PreemptionWatcher()
  with contextlib.ExitStack() as cleanup:
    cleanup.callback(watcher.restore_handlers)

    def result(summary):
      return (summary, state) if return_state else summary

    # Set-up: the config checked; data, model, method and optimizer built, nothing compiled.
    run = setup_run(config, workdir)
    state = replicate(init_state(config, run.model, run.method, run.tx,
                                 run.dataset.image_shape), run.replicated)
    ckpt = _checkpointer(run, cleanup)

    # Restore: this workdir's checkpoints, else config.resume, else config.init, else fresh.
    state, meta = _restore_or_init(config, run.settings, state, ckpt, run.log, run.method)
    record = _RunRecord.continuing(run, meta)
    finished = _finished_summary(run, record.start_step)
    if finished is not None:
      return result(finished)
    _start_workdir(config, workdir)
    saver = _Saver(ckpt, record)

    # Loop: steps, progress lines, intermediate evaluations, checkpoints, signals.
    fixed = fixed_variables(run)
    metrics = _Metrics(run, make_evaluator(run, fixed), record.start_step)
    step_fn = _step_function(run, record.start_step, fixed, cleanup)
    _log_header(run)
    state, step, preempted = _Loop(run, step_fn, metrics, saver, watcher).train(
        state, record.start_step)
    if preempted:
      return result(_preempted(run, state, step, saver, watcher))

    # Evaluate: training is saved, so from here a Ctrl-C stops at once (a rerun resumes from
    # the last step and evaluates).
    watcher.restore_handlers()
    jax.block_until_ready(state)
    saver.wait()
    train_seconds = record.clock.train_seconds()
    results, eval_seconds = metrics.final(state, step)

    # Summary: summary.json, plots and the final table.
    summary = _summary(run, results, metrics.history, record, train_seconds)
    summary['eval_seconds'] = eval_seconds
    _write_summary(run.workdir, summary, plots=run.settings.plots and jax.process_index() == 0,
                   is_loss_term=run.method.is_loss_term, verbose=run.verbose)
    return result(summary)


def _checkpointer(run: Run, cleanup) -> checkpoint.Checkpointer | None:
  """The workdir's checkpointer (None: config.checkpoints=False), closed with `cleanup`."""
  if not run.settings.checkpoints:
    return None
  ckpt = checkpoint.Checkpointer(os.path.join(run.workdir, 'checkpoints'),
                                 every_steps=run.ckpt_every,
                                 max_to_keep=run.settings.max_checkpoints)
  cleanup.callback(ckpt.close)
  return ckpt


@dataclasses.dataclass
class _RunRecord:
  """What a workdir's checkpoints carry across resumes: the step this run starts from, the
  steps of every resume, the config changes accepted on resume, the fixed networks' identity
  and the training clock."""
  start_step: int
  resumes: list[int]
  resume_changes: list[dict]
  fixed: dict
  clock: RunClock
  config: dict  # the run's config (it does not change while training)
  identity: dict

  @classmethod
  def continuing(cls, run: Run, meta: dict) -> '_RunRecord':
    """The record of a run restored with checkpoint `meta` ({} when starting fresh); raises
    ResumeMismatchError (nothing written yet) for a change the run may not make."""
    fixed = fixed_identity(run.method)
    if meta.get('fixed', fixed) != fixed:  # (checkpoints before this check: no key)
      raise checkpoint.ResumeMismatchError(
          f'{run.workdir} was trained against other fixed networks ({meta.get("fixed")}) '
          f'than config.method names now ({fixed}): delete {run.workdir} to train it again')
    start_step = int(meta.get('step', 0))
    return cls(start_step=start_step,
               resumes=list(meta.get('resumes', [])) + ([start_step] if start_step else []),
               resume_changes=_check_resume_changes(meta, run.config, run.workdir),
               fixed=fixed, clock=RunClock(float(meta.get('train_seconds', 0.0))),
               config=checkpoint.plain_config(run.config),
               identity=checkpoint.identity_fields(run.config))

  def meta(self) -> dict:
    """The JSON a checkpoint saves beside the state."""
    return {'identity': self.identity, 'fixed': self.fixed,
            'train_seconds': self.clock.train_seconds(), 'resumes': self.resumes,
            'resume_changes': self.resume_changes, 'config': self.config}


def _check_resume_changes(meta: dict, config, workdir: str) -> list[dict]:
  """Every config change of this and earlier resumes ({'step', 'field', 'saved', 'now'});
  raises ResumeMismatchError (nothing written yet) for a change the run may not make."""
  earlier = list(meta.get('resume_changes', []))
  if 'config' not in meta:  # a fresh run, weights only, or a checkpoint without its config
    return earlier
  changes, refused = checkpoint.config_changes(meta['config'], config)
  if refused:
    shown = ', '.join(f'{c["field"]} ({c["saved"]!r} -> {c["now"]!r})' for c in changes
                      if c['field'] in refused)
    raise checkpoint.ResumeMismatchError(
        f'{workdir}: resuming at step {meta["step"]} with other values than its checkpoint: '
        f'{shown}; resume with the saved values, or accept the change with '
        f'--config.allow_resume_changes={",".join(refused)} (it is recorded in '
        'summary.json\'s resume_changes)')
  return earlier + [dict(step=int(meta['step']), **c) for c in changes]


def _finished_summary(run: Run, start_step: int) -> dict | None:
  """summary.json of a workdir that already trained all its steps (None: it trains)."""
  path = os.path.join(run.workdir, 'summary.json')
  if start_step < run.total_steps or not os.path.exists(path):
    return None
  run.log(f'{run.workdir} already finished its {run.total_steps} steps: summary.json is its '
          'result')
  with open(path) as f:
    return json.load(f)


def _start_workdir(config, workdir: str) -> None:
  """Writes config.json (the data loaded and the workdir's checkpoints accepted this config);
  a summary.json there is an earlier run's (this one trains), so it goes."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  summary_path = os.path.join(workdir, 'summary.json')
  if os.path.exists(summary_path):
    os.remove(summary_path)


@dataclasses.dataclass
class _Saver:
  """The run's checkpointer (or None: config.checkpoints=False) and the record it saves."""
  ckpt: checkpoint.Checkpointer | None
  record: _RunRecord

  def due(self, step: int, total_steps: int) -> bool:
    return self.ckpt is not None and (self.ckpt.should_save(step) or step == total_steps)

  def save(self, step: int, state) -> None:
    self.ckpt.save(step, state, self.record.meta())

  def wait(self) -> None:
    if self.ckpt is not None:
      self.ckpt.wait_until_finished()


def _step_function(run: Run, start_step: int, fixed: dict, cleanup):
  """(state, step) -> (state, measurements): the compiled step on the train split's batch of
  `step` (batches from `start_step` on, read ahead; the reader closed with `cleanup`)."""
  # Pad-crop-flip batches leave their crop and flip to the step (the same images, bitwise).
  augment_pad = getattr(run.batches, 'device_augment_pad', None)
  compiled = compile_train_step(run.config, run.mesh, run.method, run.tx, run.schedule,
                                run.dataset.mean, run.dataset.std, augment_pad)
  rows = data_lib.process_rows(run.batch_size, jax.process_index(), jax.process_count())
  batches = run.batches.iterate(start_step, rows, **(
      {'for_device': True} if augment_pad is not None else {}))
  cleanup.callback(batches.close)

  def step_fn(state, step: int):
    batch_step, images, labels, *crops = next(batches)
    assert batch_step == step, (batch_step, step)
    if not run.labels_checked:
      validate.validate_labels(labels, run.dataset.num_classes, f'train (step {step})')
    crops = crops[0] if crops else None  # `get_for_device`'s crops (None: no augmentation)
    images, labels, crops = (
        None if array is None else jax.make_array_from_process_local_data(run.sharded, array)
        for array in (images, labels, crops))
    return compiled(state, images, labels, fixed, crops)

  return step_fn


class _Metrics:
  """metrics.jsonl (rows after the restored step are written again by this run) and the
  evaluations' history."""

  def __init__(self, run: Run, evaluate_state, start_step: int):
    self.run, self.evaluate_state = run, evaluate_state
    self.writer = reporting.MetricWriter(run.workdir, enabled=jax.process_index() == 0)
    self.writer.truncate_after(start_step)
    self.history = [
        {'step': r['step'], **{k.removeprefix('eval/'): v for k, v in r.items()
                               if k.startswith('eval/')}}
        for r in reporting.read_metrics(run.workdir) if 'eval/full_accuracy' in r]

  def write(self, step: int, values: dict) -> None:
    self.writer.write(step, values)

  def evaluate(self, state, step: int) -> float:
    """An evaluation during training, logged and written; returns its seconds."""
    start = time.perf_counter()
    results = self.evaluate_state(state, final=False)
    self.history.append({'step': step, **results})
    self.writer.write(step, {f'eval/{k}': v for k, v in results.items()})
    self.run.log(f'eval at step {step}: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in results.items() if isinstance(v, float)))
    return time.perf_counter() - start

  def final(self, state, step: int) -> tuple[dict, float]:
    """The final evaluation at `step`, written; (results, seconds)."""
    self.run.log('final evaluation ...')
    start = time.perf_counter()
    results = self.evaluate_state(state, final=True)
    self.history = [h for h in self.history if h['step'] != step] + [{'step': step, **results}]
    self.writer.write(step, {f'eval/{k}': v for k, v in results.items()})
    return results, time.perf_counter() - start


def _log_header(run: Run) -> None:
  config = run.config
  run.log(f'gkt_jax: {config.method.name} on {config.data.name} ({run.dataset.num_train} '
          f'train / {run.dataset.num_test} test images), {config.model.arch} '
          f'({run.model.num_blocks} blocks), {run.total_steps} steps of batch '
          f'{run.batch_size} ({run.total_steps / run.batches.steps_per_epoch:.1f} epochs) on '
          f'{run.num_devices} {jax.default_backend()} device(s) in {jax.process_count()} '
          f'process(es), parallel={run.settings.parallel}, '
          f'{run.method.forwards_per_step()} forwards/step')


class _Loop:
  """The training loop: steps, logs, intermediate evaluations, checkpoints, signals."""

  def __init__(self, run: Run, step_fn, metrics: _Metrics, saver: _Saver, watcher):
    self.run, self.step_fn, self.metrics = run, step_fn, metrics
    self.saver, self.watcher = saver, watcher
    self.clock = saver.record.clock

  def train(self, state, step: int):
    """Trains from `step` to the end or to a signal; returns (state, step, preempted)."""
    run = self.run
    progress = reporting.Progress(run.total_steps, step, run.batch_size, enabled=run.verbose)
    self.progress = progress
    self.clock.compile_start = time.perf_counter()
    # Steps dispatched but not finished: bounded, so that a signal is acted on within a few
    # steps of the device's progress (an unbounded host ran 30+ steps ahead on CPU).
    in_flight = collections.deque()
    if self.watcher.requested(step):
      return state, step, True
    while step < run.total_steps:
      state, pending = self.step_fn(state, step)
      step += 1
      in_flight.append(pending)
      if len(in_flight) > MAX_STEPS_IN_FLIGHT:
        jax.block_until_ready(in_flight.popleft())
      if self.clock.train_start is None:
        jax.block_until_ready(pending)
        self.clock.first_step_done()
        run.log(f'first step (compile + run) took {self.clock.compile_seconds:.1f}s')
        progress.start(step)
      is_ckpt = self.saver.due(step, run.total_steps)
      preempted = self.watcher.requested(step)
      self.report(step, pending, check=is_ckpt or preempted)
      if preempted:
        return state, step, True
      # Evaluate before saving: a run resumed from this checkpoint starts after the eval.
      if step % run.eval_every == 0 and step != run.total_steps:
        seconds = self.metrics.evaluate(state, step)
        progress.exclude(seconds)
        self.clock.eval_seconds += seconds
      if is_ckpt:
        self.saver.save(step, state)
    return state, step, False

  def report(self, step: int, pending, check: bool) -> None:
    """At log steps, and before every save (a non-finite step must never reach a
    checkpoint): pulls the step's measurements, checks them, logs them."""
    run = self.run
    is_log = step % run.log_every == 0 or step == run.total_steps
    if not (is_log or check):
      return
    values = _scalars(jax.device_get(pending))
    reporting.check_finite(step, values)
    if is_log:
      values['img_per_sec'] = self.progress.rate(step)
      values['epoch'] = step / run.batches.steps_per_epoch
      self.metrics.write(step, values)
      shown = ('loss',) + tuple(run.method.progress_metrics) + ('lr',)
      self.progress.line(step, {k: values[k] for k in shown if k in values},
                         values['img_per_sec'])


def _preempted(run: Run, state, step: int, saver: _Saver, watcher) -> dict:
  """Saves at `step` (a signal asked for it) and says how to resume."""
  if saver.ckpt is not None:
    saver.save(step, state)
    saver.wait()
    run.log(f'{watcher.signal_name}: saved a checkpoint at step {step} in '
            f'{saver.ckpt.directory}; run the same command again to resume')
  else:
    run.log(f'{watcher.signal_name}: stopping at step {step} (config.checkpoints=False: '
            'nothing saved)')
  return {'preempted': True, 'step': step, 'signal': watcher.signal_name}


def _summary(run: Run, results: dict, history: list[dict], record: _RunRecord,
             train_seconds: float) -> dict:
  config, total_steps, clock = run.config, run.total_steps, record.clock
  full = [h['full_accuracy'] for h in history if 'full_accuracy' in h]
  return {
      'method': config.method.name, 'dataset': config.data.name, 'arch': config.model.arch,
      'seed': config.seed, 'steps': total_steps,
      'epochs': total_steps / run.batches.steps_per_epoch, 'batch_size': run.batch_size,
      'num_devices': run.num_devices, 'num_processes': jax.process_count(),
      'parallel': run.settings.parallel, 'backend': jax.default_backend(),
      'forwards_per_step': run.method.forwards_per_step(),
      'resumed_from_step': record.start_step or None,  # the last resume; all of them:
      'resumed_from_steps': record.resumes,
      **results,
      # Training accuracy minus test accuracy of the deployed network (final evaluation).
      'generalization_gap': (results['train_accuracy'] - results['full_accuracy']
                             if 'full_accuracy' in results else None),
      'best_full_accuracy': max(full) if full else None,
      'compile_seconds': clock.compile_seconds,
      'train_seconds': train_seconds,
      'seconds_per_step': ((train_seconds - clock.prior)
                           / max(total_steps - record.start_step - 1, 1)),
      # Evaluations during training, since the run's last start ('eval_seconds': the final).
      'intermediate_eval_seconds': clock.eval_seconds,
      'resume_changes': record.resume_changes,  # config changes on resume
      'code': reporting.code_version(),  # the library that wrote the summary
  }


def _write_summary(workdir: str, summary: dict, *, plots: bool, is_loss_term,
                   verbose: bool) -> None:
  """summary.json and (with `plots`) plots/ by process 0; the final table with `verbose`."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(reporting._jsonable(summary), f, indent=2)
    if plots:
      reporting.plot_run(workdir, summary, is_loss_term)
  if verbose:
    print(reporting.final_table(summary), flush=True)
    print(f'wrote {workdir}/summary.json, metrics.jsonl, checkpoints/, plots/', flush=True)
