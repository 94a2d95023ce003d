"""A training run built from its config (`setup_run`): mesh, data, model, method,
durations, optimizer, the method's fixed networks and the evaluator of `config.evals`;
nothing is compiled or written but the workdir itself."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gkt_jax import data as data_lib
from gkt_jax import evaluate, methods, models, utils
from gkt_jax.config import data as data_config
from gkt_jax.config import evals as evals_config
from gkt_jax.train import optim, run_settings, validate
from gkt_jax.train.step import make_mesh, replicate


def build(config: ml_collections.ConfigDict, dataset: data_lib.ArrayDataset):
  """The model a method trains (`method.model`, built around config.model) and the method."""
  method = methods.get_method(config.method,
                              models.from_config(config.model, dataset.num_classes))
  sources = method.fixed_sources()
  if sources:  # fixed networks, from the runs that trained them
    from gkt_jax.train import export  # pylint: disable=g-import-not-at-top
    method.attach_fixed({name: [export.load_run(w)[:2] for w in workdirs]
                          for name, workdirs in sources.items()})
  return method.model, method


def fixed_identity(method) -> dict:
  """{name: [[workdir, weights fingerprint]]} of the method's fixed networks: a run trained
  against other fixed weights must not be resumed or reused as if it were this one."""
  fixed = method.fixed_inputs()
  if not fixed:
    return {}
  sources = method.fixed_sources()

  def fingerprint(variables) -> str:  # sum of |w| over every weight and statistic
    total = sum(float(np.abs(np.asarray(x, np.float64)).sum())
                for x in jax.tree.leaves(variables))
    return f'{total:.9g}'

  return {name: [[os.path.abspath(w), fingerprint(v)]
                 for w, v in zip(sources[name], fixed[name])] for name in sources}


@dataclasses.dataclass
class Run:
  """What a training run is made of, built from its config by `setup_run`."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  dataset: Any
  model: Any
  method: Any
  batches: Any  # the train split's batch source (`data.TrainBatches` or a tfds pipeline)
  total_steps: int
  log_every: int
  eval_every: int
  ckpt_every: int
  tx: optax.GradientTransformation
  schedule: Any
  labels_checked: bool  # in-memory labels checked once; streamed ones batch by batch
  settings: run_settings.RunSettings  # the config's own fields (seed, checkpoints, ...)
  data: data_config.DataSettings
  verbose: bool  # progress on stdout (the writing process, unless config.verbose=False)

  def log(self, message: str) -> None:
    if self.verbose:
      print(message, flush=True)

  @property
  def batch_size(self) -> int:
    return self.data.batch_size

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def sharded(self) -> NamedSharding:
    return NamedSharding(self.mesh, P('data'))


def setup_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config and builds the run: mesh, data, model, method, durations and
  optimizer (nothing is compiled or written but the workdir itself)."""
  mesh = make_mesh()
  validate.validate_config(config, num_devices=mesh.devices.size)
  os.makedirs(workdir, exist_ok=True)
  settings, data = run_settings.read(config), data_config.read(config.data)
  dataset = data_lib.load_dataset(data.name, data_dir=data.dir, **dict(data.options or {}))
  labels_checked = isinstance(dataset, data_lib.ArrayDataset)
  if labels_checked:
    validate.validate_labels(dataset.train_labels, dataset.num_classes, 'train')
    validate.validate_labels(dataset.test_labels, dataset.num_classes, 'test')
  model, method = build(config, dataset)
  batches = dataset.train_batches(data.batch_size, seed=settings.seed,
                                  augment=data.augment.arguments() or None)
  per_epoch = batches.steps_per_epoch
  total_steps = utils.steps('total', config, per_epoch)
  if total_steps is None:
    raise ValueError('set total_steps or total_epochs in the config')
  eval_every = utils.steps('eval_every', config, per_epoch, default=total_steps)
  tx, schedule = optim.make_optimizer(config.optim, total_steps)
  return Run(config=config, workdir=workdir, mesh=mesh, dataset=dataset, model=model,
             method=method, batches=batches, total_steps=total_steps,
             log_every=utils.steps('log_every', config, per_epoch, default=50),
             eval_every=eval_every,
             # Checkpoints every ckpt_steps/ckpt_epochs (default: at each evaluation), at the
             # end and on a signal.
             ckpt_every=utils.steps('ckpt_every', config, per_epoch, default=eval_every),
             tx=tx, schedule=schedule, labels_checked=labels_checked, data=data,
             settings=settings, verbose=jax.process_index() == 0 and settings.verbose)


def fixed_variables(run: Run) -> dict:
  """The method's fixed networks' variables (`method.fixed_inputs()`), replicated over the
  mesh: a step input and an evaluation variable, never train state ({}: none)."""
  fixed = run.method.fixed_inputs()
  return replicate(fixed, run.replicated) if fixed is not None else {}


def make_evaluator(run: Run, fixed: dict) -> Any:
  """(state, final) -> evaluation results of config.evals (recalibrated BatchNorm
  statistics, when the method asks for them, serve the evaluation only)."""
  eval_batch = run.data.eval_batch_size
  eval_batch -= eval_batch % run.num_devices
  dataset = run.dataset

  def checked(batches, split):
    if run.labels_checked:
      return batches

    def checked_batches(size):
      for images, labels, num_valid in batches(size):
        validate.validate_labels(labels[:num_valid], dataset.num_classes, split)
        yield images, labels, num_valid
    return checked_batches

  runner = evaluate.EvalRunner(
      run.model, run.method, None, None, mean=dataset.mean, std=dataset.std,
      batch_size=eval_batch, data_sharding=run.sharded, replicated_sharding=run.replicated,
      eval_source=checked(dataset.eval_batches, 'test'), num_examples=dataset.num_test,
      log=run.log)
  recalibration = evaluate.bn_recalibration(
      run.model, run.method.bn_recalibration_images(), run.dataset, run.batch_size,
      run.settings.seed, run.log, run.method.deployed_apply_kwargs())
  evals = {name: entry.arguments() for name, entry in evals_config.read(
      run.config.evals if 'evals' in run.config else None, run.config.method.name).items()}
  # The regime: the deployed network on (a fixed sample of) the training images, test-time
  # transform, at the final evaluation only.
  train_sample = data_lib.train_sample(
      dataset.num_train, run.settings.train_accuracy_examples)
  num_train_eval = dataset.num_train if train_sample is None else len(train_sample)
  train_source = checked(lambda size: dataset.train_eval_batches(size, train_sample), 'train')

  def evaluate_state(state, final: bool) -> dict:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    if fixed:
      variables['fixed'] = fixed
    if recalibration is not None:  # for evaluation only: the train state keeps its own
      recalibrate, recal_batches = recalibration
      variables = recalibrate(variables, recal_batches)
    runner.variables = variables
    results = evaluate.run_evaluators(runner, evals, final=final)
    if final:
      runner.label = 'final evaluation (training images)'
      results['train_accuracy'] = runner.deployed_accuracy(train_source, num_train_eval)
      results['train_accuracy_examples'] = num_train_eval
    return results

  return evaluate_state
