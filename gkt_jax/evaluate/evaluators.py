"""Evaluators chosen by config: `config.evals.<name> = dict(type=..., ...)`.

Each evaluator is a callable `(runner) -> dict` of JSON-able results, where `runner`
(`EvalRunner`) owns the test data, the compiled forward (one compilation serves every keep
mask) and the current variables. Subnets are evaluated with the shared BatchNorm running
statistics, as in the papers, and through the method's test-time rule
(`method.subnet_logits`: stochastic depth scales the kept branches). Masks come from fixed
seeds, so every method and every eval step sees the same subnets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import data as data_lib
from gkt_jax import masks
from gkt_jax import utils
from gkt_jax.config import evals as evals_config


# A pass over the evaluation images that runs longer than this reports progress this often.
PROGRESS_EVERY_SECONDS = 15.0

# Keep masks one evaluation program takes: a host call runs up to this many subnets (a loop
# over the first `n` rows, so padding costs nothing), and one compilation serves every count.
MASKS_PER_CALL = 32


class EvalRunner:
  """Accuracy of the deployed network and of arbitrary subnets on a fixed image set.

  Every count is accumulated on the device: an evaluation moves its results to the host once,
  at its end, not once per batch. Each test batch is put on the device once and every subnet
  of an evaluator runs on it through one compiled program (a loop over up to MASKS_PER_CALL
  masks), so a run compiles one program for all its subnet evaluators.
  """

  def __init__(self, model, method, images: np.ndarray | None, labels: np.ndarray | None, *,
               mean, std, batch_size: int, data_sharding=None, replicated_sharding=None,
               eval_source=None, num_examples: int | None = None,
               log: Callable[[str], None] | None = None,
               progress_every_seconds: float = PROGRESS_EVERY_SECONDS):
    """Args:
      images, labels: the test set as arrays, or None with `eval_source`.
      eval_source: batch_size -> iterator of (images, labels, num_valid), e.g. a dataset's
        `eval_batches` (for datasets not held in memory); needs `num_examples`.
      data_sharding: batch sharding (a multi-process run puts each process's rows).
      log: where a pass longer than `progress_every_seconds` reports the batches the device
        has done and an ETA, that often (None: silent), naming `label` (`run_evaluators`
        sets it to the evaluator).
    """
    self.log = log
    self.progress_every_seconds = float(progress_every_seconds)
    self.label = 'evaluation'
    self.model = model
    self.method = method
    self.images = images
    self.labels = labels
    if eval_source is None:
      eval_source = lambda size: data_lib.eval_batches(images, labels, size)
      num_examples = len(labels)
    elif num_examples is None:
      raise ValueError('EvalRunner: eval_source needs num_examples')
    self.eval_source = eval_source
    self.num_examples = int(num_examples)
    self.batch_size = batch_size
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.data_sharding = data_sharding
    self.variables = None
    self._compile(method, data_sharding, replicated_sharding)

  def _compile(self, method, data_sharding, replicated_sharding) -> None:
    """The jitted counting programs: the deployed network's and the subnets' (a loop over
    up to MASKS_PER_CALL keep masks)."""

    def normalise(images):
      return data_lib.normalize(images, self.mean, self.std)

    def num_correct(logits, labels, valid):
      return jnp.sum((jnp.argmax(logits, -1) == labels) & valid, axis=-1, dtype=jnp.int32)

    def correct_subnets(variables, images, labels, valid, keep_masks, num_masks):
      images = normalise(images)

      def one(i, counts):
        logits = method.subnet_logits(variables, images, keep_masks[i])
        return counts.at[i].set(num_correct(logits, labels, valid))

      return jax.lax.fori_loop(0, num_masks, one, jnp.zeros(len(keep_masks), jnp.int32))

    def correct_deployed(variables, images, labels, valid):
      return num_correct(method.predict(variables, normalise(images)), labels, valid)

    kw = {}
    if data_sharding is not None:
      kw = dict(in_shardings=(replicated_sharding, data_sharding, data_sharding, data_sharding),
                out_shardings=replicated_sharding)
    self._correct_deployed = jax.jit(correct_deployed, **kw)
    subnet_kw = {}
    if kw:
      subnet_kw = dict(kw, in_shardings=kw['in_shardings'] + (replicated_sharding,) * 2)
    self._correct_subnets = jax.jit(correct_subnets, **subnet_kw)
    self._num_correct = num_correct
    self._normalise = normalise
    self._jit_kw = kw  # shardings of (variables, images, labels, valid)
    self._compiled_logits: dict[str, Callable] = {}

  def _put(self, array):
    if self.data_sharding is None:
      return jnp.asarray(array)
    # Each process contributes its rows of the global batch (all rows in one process).
    rows = data_lib.process_rows(len(array), jax.process_index(), jax.process_count())
    return jax.make_array_from_process_local_data(self.data_sharding, array[rows])

  def _fraction_correct(self, counts_fn, eval_source=None,
                        num_examples: int | None = None) -> np.ndarray:
    """The sum over the eval set (or `eval_source`'s `num_examples`) of
    `counts_fn(variables, images, labels, valid)` (an array or a list of them, of correct
    counts), summed on the device and moved to the host once, over the number of examples:
    f64 (a list's arrays concatenated)."""
    if eval_source is None:
      eval_source, num_examples = self.eval_source, self.num_examples
    total = None
    progress = _Progress(self.log, self.label, -(-num_examples // self.batch_size),
                         self.progress_every_seconds)
    for images, labels, num_valid in eval_source(self.batch_size):
      valid = np.arange(len(labels)) < num_valid
      counts = counts_fn(self.variables, self._put(images), self._put(labels), self._put(valid))
      total = counts if total is None else jax.tree.map(jnp.add, total, counts)
      progress.batch_dispatched(total)
    if total is None:
      raise ValueError('EvalRunner: the evaluation set has no examples')
    wait_interruptibly(total)
    total = np.concatenate([np.ravel(np.asarray(t, np.int64)) for t in jax.tree.leaves(total)])
    return total.astype(np.float64) / num_examples

  def deployed_accuracy(self, eval_source=None, num_examples: int | None = None) -> float:
    """Accuracy of the method's test-time network (e.g. stochastic depth's scaled one) on the
    eval set, or on `eval_source` (batch_size -> iterator of (images, labels, num_valid)) of
    `num_examples` images, e.g. the training images (same compiled program)."""
    if (eval_source is None) != (num_examples is None):
      raise ValueError('deployed_accuracy: give eval_source and num_examples together')
    return float(self._fraction_correct(self._correct_deployed, eval_source, num_examples)[0])

  def accuracies(self, name: str, logits_fn: Callable) -> np.ndarray:
    """Accuracies of K predictors computed together: `logits_fn(variables, images)` returns
    f32[K, B, C] from normalised images; compiled once per `name`. Returns f64[K]."""
    if name not in self._compiled_logits:
      def correct(variables, images, labels, valid):
        return self._num_correct(logits_fn(variables, self._normalise(images)), labels, valid)
      self._compiled_logits[name] = jax.jit(correct, **self._jit_kw)
    return self._fraction_correct(self._compiled_logits[name])

  def subnet_accuracies(self, keep_masks) -> np.ndarray:
    """Accuracies f64[N] of the subnets keep_masks bool[N, L] as the method runs them at test
    time (`method.subnet_logits`), all on each test batch in turn, through one compiled
    program. An all-True row is the deployed network and is measured by its own program
    (`method.predict`, in the same pass), so it equals `deployed_accuracy` exactly on every
    backend: where blocks have no cond boundary (GPU/TPU, `block_barriers` False) the masked
    program may differ from the unmasked one by float rounding."""
    keep_masks = np.asarray(keep_masks, bool)
    if keep_masks.ndim != 2 or not len(keep_masks):
      raise ValueError(f'subnet_accuracies: keep_masks must be bool[N >= 1, L], got shape '
                       f'{keep_masks.shape}')
    full = keep_masks.all(axis=1)
    subnets = keep_masks[~full]  # only these run through the masked program
    num_masks = len(subnets)
    num_calls = -(-num_masks // MASKS_PER_CALL)
    padded = np.ones((num_calls * MASKS_PER_CALL, keep_masks.shape[1]), bool)
    padded[:num_masks] = subnets
    calls = [(jnp.asarray(padded[start:start + MASKS_PER_CALL]),
              jnp.asarray(min(MASKS_PER_CALL, num_masks - start), jnp.int32))
             for start in range(0, num_masks, MASKS_PER_CALL)]

    def counts(variables, images, labels, valid):
      out = [self._correct_subnets(variables, images, labels, valid, masks, n)
             for masks, n in calls]
      if full.any():
        out.append(self._correct_deployed(variables, images, labels, valid))
      return out

    fractions = self._fraction_correct(counts)
    accuracies = np.empty(len(keep_masks))
    accuracies[~full] = fractions[:num_masks]  # the padding rows count nothing
    if full.any():
      accuracies[full] = fractions[-1]
    return accuracies

  def subnet_accuracy(self, keep_mask) -> float:
    """Accuracy of one subnet keep_mask bool[L] (`subnet_accuracies` of one row)."""
    return float(self.subnet_accuracies(np.asarray(keep_mask, bool)[None])[0])


def wait_interruptibly(tree, poll_seconds: float = 0.05) -> None:
  """Waits until every array of `tree` is computed, in short sleeps: a wait inside XLA
  defers Python's signal handlers (Ctrl-C) until the device work queued before it is done,
  which for a long evaluation is minutes."""
  for leaf in jax.tree.leaves(tree):
    while not leaf.is_ready():
      time.sleep(poll_seconds)


class _Progress:
  """'<label>: N/M batches (P%), elapsed ... ETA ...' every `every` seconds of a pass.

  Batches are dispatched ahead of the device; a report first waits until the dispatched ones
  are computed, so its count is what the device has done.
  """

  def __init__(self, log, label: str, num_batches: int, every: float):
    self.log, self.label, self.num_batches, self.every = log, label, num_batches, every
    self.start = self.last = time.perf_counter()
    self.done = 0

  def batch_dispatched(self, total) -> None:
    self.done += 1
    if self.log is None or time.perf_counter() - self.last < self.every:
      return
    wait_interruptibly(total)
    now = time.perf_counter()
    self.last = now
    elapsed = now - self.start
    fraction = min(1.0, self.done / max(1, self.num_batches))
    self.log(f'{self.label}: {self.done}/{self.num_batches} batches ({fraction:.0%}), '
             f'elapsed {utils.format_seconds(elapsed)} ETA '
             f'{utils.format_seconds(elapsed * (1 - fraction) / fraction)}')


# The evaluators' defaults: their settings classes' (gkt_jax/config/evals.py).
_CHAINS = evals_config.SubnetChainsSettings()
_DEPTH = evals_config.DepthCurveSettings()
_NESTED = evals_config.NestedDepthCurveSettings()
_PRUNED = evals_config.PrunedDepthSettings()


def full_accuracy(runner: EvalRunner) -> dict:
  return {'full_accuracy': runner.deployed_accuracy()}


def subnet_chains(runner: EvalRunner, *, num_chains: int = _CHAINS.num_chains,
                  levels: int = _CHAINS.levels, sampler: str = _CHAINS.sampler,
                  seed: int = _CHAINS.seed, **sampler_kw) -> dict:
  """Mean accuracy of the level-1..G subnets over `num_chains` nested chains (GKT's sampler)."""
  stage_sizes = tuple(runner.model.stage_sizes)
  keys = jax.random.split(jax.random.key(seed), num_chains)
  chains = np.asarray(jax.vmap(lambda k: masks.sample_nested_subnets(
      k, stage_sizes, levels, sampler=sampler, **sampler_kw))(keys))
  acc = runner.subnet_accuracies(chains.reshape(-1, chains.shape[-1])).reshape(num_chains,
                                                                               levels)
  out = {f'subnet_acc/level{g + 1}': float(acc[:, g].mean()) for g in range(levels)}
  out.update({f'subnet_kept/level{g + 1}': float(chains[:, g].sum(-1).mean())
              for g in range(levels)})
  return out


def _accuracy_by_kept(runner: EvalRunner, sampled: np.ndarray) -> list:
  """[[kept blocks, mean accuracy, number of distinct subnets]] over the distinct rows of
  `sampled` bool[N, L] and the full network, by number of kept blocks."""
  sampled = np.concatenate([np.ones((1, sampled.shape[1]), bool), sampled])
  distinct = np.unique(sampled, axis=0)
  by_kept: dict[int, list[float]] = {}
  for mask, acc in zip(distinct, runner.subnet_accuracies(distinct)):
    by_kept.setdefault(int(mask.sum()), []).append(float(acc))
  return [[kept, float(np.mean(accs)), len(accs)] for kept, accs in sorted(by_kept.items())]


def depth_curve(runner: EvalRunner, *, num_subnets: int = _DEPTH.num_subnets,
                sampler: str = _DEPTH.sampler, seed: int = _DEPTH.seed, **sampler_kw) -> dict:
  """Accuracy vs number of kept blocks over `num_subnets` sampled subnets (+ the full net);
  the default sampler is stimulative training's per-stage prefix."""
  stage_sizes = tuple(runner.model.stage_sizes)
  keys = jax.random.split(jax.random.key(seed), num_subnets)
  sampled = np.asarray(jax.vmap(lambda k: masks.sample_subnet(
      k, stage_sizes, sampler=sampler, **sampler_kw))(keys))
  return {'depth_curve': _accuracy_by_kept(runner, sampled)}


def nested_depth_curve(runner: EvalRunner, *, num_chains: int = _NESTED.num_chains,
                       levels: int = _NESTED.levels, sampler: str = _NESTED.sampler,
                       seed: int = _NESTED.seed, **sampler_kw) -> dict:
  """Accuracy vs number of kept blocks over every subnet of `num_chains` nested chains of
  `levels` (GKT's sampler), + the full net: the depth curve drawn from GKT's training
  distribution, beside `depth_curve`'s prefix subnets, for every method."""
  stage_sizes = tuple(runner.model.stage_sizes)
  keys = jax.random.split(jax.random.key(seed), num_chains)
  chains = np.asarray(jax.vmap(lambda k: masks.sample_nested_subnets(
      k, stage_sizes, levels, sampler=sampler, **sampler_kw))(keys))
  return {'nested_depth_curve': _accuracy_by_kept(runner, chains.reshape(-1, chains.shape[-1]))}


def block_deletion(runner: EvalRunner) -> dict:
  """Accuracy after deleting each single droppable block (robustness)."""
  stage_sizes = tuple(runner.model.stage_sizes)
  droppable = np.asarray(masks.droppable_mask(stage_sizes))
  blocks = np.flatnonzero(droppable)
  deleted = ~np.eye(len(droppable), dtype=bool)[blocks]  # row j: all but block blocks[j]
  accs = ([[int(i), float(a)] for i, a in zip(blocks, runner.subnet_accuracies(deleted))]
          if len(blocks) else [])
  return {'block_deletion': accs,
          'block_deletion_mean': float(np.mean([a for _, a in accs])) if accs else None}


def pruned_depth(runner: EvalRunner, *, periods: Sequence[int] = _PRUNED.periods) -> dict:
  """Accuracy of the network pruned by LayerDrop's rule, every `period`-th droppable block
  removed (`masks.pruned_every_other`; period 2: every other), as the method runs a subnet
  at test time: 'pruned_acc/period{p}' and the blocks kept, 'pruned_kept/period{p}'."""
  stage_sizes = tuple(runner.model.stage_sizes)
  pruned = np.stack([masks.pruned_every_other(stage_sizes, p) for p in periods])
  out = {}
  for p, mask, acc in zip(periods, pruned, runner.subnet_accuracies(pruned)):
    out[f'pruned_acc/period{p}'] = float(acc)
    out[f'pruned_kept/period{p}'] = int(mask.sum())
  return out


def classmate_paths(runner: EvalRunner) -> dict:
  """EKD-FWSNet: accuracy of every path of a ClassmateResNet (main = the deployed network,
  cm1.., the classmates) and of their ensemble (the mean of all paths' logits)."""
  model = runner.model
  if not hasattr(model, 'path_names'):
    raise ValueError(f'the classmate_paths evaluator needs a model with a classmate branch '
                     f'(method ekd_fws); this one is a {type(model).__name__}')

  def logits_fn(variables, images):
    path_logits = model.apply(variables, images, train=False, classmates=True)[1]['path_logits']
    return jnp.concatenate([path_logits, jnp.mean(path_logits, axis=0, keepdims=True)])

  accs = runner.accuracies('classmate_paths', logits_fn)
  names = model.path_names + ('ensemble',)
  return {f'path_acc/{name}': float(a) for name, a in zip(names, accs)}


def level_points(summary: dict) -> list[tuple[int, float | None, float]]:
  """(level, mean kept blocks or None, mean accuracy) of `subnet_chains`' levels in a
  summary or an evaluation's results, level 1 first."""
  points, level = [], 1
  while f'subnet_acc/level{level}' in summary:
    points.append((level, summary.get(f'subnet_kept/level{level}'),
                   summary[f'subnet_acc/level{level}']))
    level += 1
  return points


# Per-evaluation accuracies of several networks, worth a curve over training.
CURVE_PREFIXES = ('subnet_acc/', 'path_acc/')


def summary_rows(summary: dict) -> list[tuple[str, float]]:
  """Labelled accuracies the evaluators put in a summary besides the full network's:
  EKD-FWSNet's paths, the subnet levels, the mean single-block deletion."""
  rows = []
  for key, value in summary.items():
    if key.startswith('path_acc/'):
      name = key.removeprefix('path_acc/')
      rows.append(({'main': 'main path (deployed)', 'ensemble': 'ensemble of all paths'}.get(
          name, f'classmate path {name}'), value))
  for level, kept, acc in level_points(summary):
    rows.append((f'subnet level {level}' + (f' (~{kept:.1f} blocks)' if kept is not None
                                            else ''), acc))
  if summary.get('block_deletion_mean') is not None:
    rows.append(('one block deleted (mean)', summary['block_deletion_mean']))
  for key, value in summary.items():
    if key.startswith('pruned_acc/period'):
      period = key.removeprefix('pruned_acc/period')
      label = ('every other droppable block pruned' if period == '2'
               else f'one droppable block in {period} pruned')
      kept = summary.get(f'pruned_kept/period{period}')
      rows.append((label + (f' ({kept} blocks)' if kept is not None else ''), value))
  return rows


EVALUATORS: dict[str, Callable[..., dict]] = {
    'full': full_accuracy, 'subnet_chains': subnet_chains, 'depth_curve': depth_curve,
    'nested_depth_curve': nested_depth_curve, 'block_deletion': block_deletion,
    'classmate_paths': classmate_paths, 'pruned_depth': pruned_depth}


def run_evaluators(runner: EvalRunner, evals_config, *, final: bool) -> dict:
  """Runs every configured evaluator; those with `final_only=True` only when final."""
  results = {}
  chosen = []
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = cfg.pop('type', name)
    if kind not in EVALUATORS:
      raise ValueError(f'evals.{name}.type={kind!r} is not one of {tuple(EVALUATORS)}')
    if not (cfg.pop('final_only', False) and not final):
      chosen.append((name, kind, cfg))
  stage = 'final evaluation' if final else 'evaluation'
  for i, (name, kind, cfg) in enumerate(chosen):
    runner.label = f'{stage} {i + 1}/{len(chosen)} ({name})'
    results.update(EVALUATORS[kind](runner, **cfg))
  runner.label = stage
  return results


def bn_recalibration(model, recal_images: int, dataset, batch_size: int, seed: int,
                     log: Callable[[str], None], apply_kwargs: dict | None = None):
  """(recalibrate, image batches) for a method's `bn_recalibration_images()` = `recal_images`
  (0: None), built once per run so that the recalibration compiles once: equal batches of
  about `batch_size` of the first training images of `dataset` in `seed`'s order (a
  remainder smaller than one batch is left out). `apply_kwargs`: the method's
  `deployed_apply_kwargs()`, so that the statistics are those of the network it deploys.
  None, said through `log`, for a model without BatchNorm statistics."""
  if not recal_images:
    return None
  momentum = getattr(model, 'bn_momentum', None)
  if momentum is None:
    log(f'method.bn_recalibration_images={recal_images}: {type(model).__name__} has no '
        'BatchNorm statistics to recalibrate; evaluating without recalibration')
    return None
  if recal_images > dataset.num_train:  # found before training, not at its end
    log(f'method.bn_recalibration_images={recal_images} is more than the '
        f'{dataset.num_train} training images: recalibrating on all of them')
    recal_images = dataset.num_train
  num_batches = max(1, recal_images // batch_size)
  size = recal_images // num_batches
  raw, _ = dataset.train_batches(num_batches * size, seed=seed).get(0)
  images = data_lib.normalize(raw, dataset.mean, dataset.std)
  return (make_recalibrator(model, momentum, apply_kwargs),
          images.reshape((num_batches, size) + images.shape[1:]))


def make_recalibrator(model, momentum: float, apply_kwargs: dict | None = None) -> Callable:
  """A jitted `recalibrate(variables, image_batches f32[N, B, H, W, C]) -> variables` with
  the full network's BatchNorm statistics re-estimated on the N batches (ST++). A run builds
  it once and calls it at every evaluation: one compilation per batch shape. The network is
  `model.apply(..., train=True, **apply_kwargs)`: with a method's `deployed_apply_kwargs()`
  (stochastic depth's test-time residual scaling) the one the method deploys, whose
  statistics the evaluation then uses.

  In training mode a layer's output depends only on its batch statistics, so each batch's
  statistics can be read exactly from one `apply` (new = m * old + (1 - m) * batch); the
  result is their average over batches (PyTorch's cumulative average, momentum=None).
  Dropout layers (a model with `dropout_rate > 0`) drop as in training, batch i with the
  fixed key `fold_in(key(0), i)`; a model without dropout draws nothing from it.
  """
  @jax.jit
  def recalibrate(variables, image_batches):
    def batch_stats_of(inputs):
      index, images = inputs
      _, updates = model.apply(variables, images, train=True, mutable=['batch_stats'],
                               rngs={'dropout': jax.random.fold_in(jax.random.key(0), index)},
                               **(apply_kwargs or {}))
      return jax.tree.map(lambda new, old: (new - momentum * old) / (1.0 - momentum),
                          updates['batch_stats'], variables['batch_stats'])

    stats = jax.lax.map(batch_stats_of, (jnp.arange(image_batches.shape[0]), image_batches))
    return {**variables, 'batch_stats': jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)}

  return recalibrate


def recalibrate_batch_stats(model, variables, image_batches, momentum: float,
                            apply_kwargs: dict | None = None):
  """`variables` with BatchNorm statistics re-estimated on `image_batches` (a sequence of
  equal-sized f32[B, H, W, C]); one call of `make_recalibrator`."""
  return make_recalibrator(model, momentum, apply_kwargs)(variables,
                                                          jnp.stack(list(image_batches)))
