r"""Runs a named results suite (every method x seeds, same data order) and writes its report.

  python -m experiments.reproduce --suite fmnist            # or: make results
  python -m experiments.reproduce --suite digits            # the pipeline's quick check
  python -m experiments.reproduce --suite fmnist --report_only
  python -m experiments.reproduce --suite fmnist_scarce       # the papers' regime (below)

Every (method, seed) is one run of the trainer in ROOT/<suite>/<label>/seed<k> (ROOT: results/);
a finished run (its summary.json, committed) is not trained again and an interrupted one
resumes from its checkpoints, so the same command continues a suite.
Runs of one seed share the data order and the schedule (the batch of step s depends only on
(seed, s)). The report, written to docs/results/<suite>.md, .json and _depth.png, gives for
each method the final-evaluation (not best-epoch) test accuracy of the full network as mean
+- std over seeds, the difference from the baseline paired by seed, the subnet levels, the
depth-accuracy curve and the training time relative to the baseline, the deployed network's
training accuracy (eval mode) and generalisation gap where the runs measured them; and the
ResKD chain's accuracy-vs-cost table when the suite has one.

The scarce suites (`fmnist_scarce`: ResNet-20 x0.5; `fmnist_scarce_r56`: ResNet-56 x0.5) train
on a fixed class-stratified subset of Fashion-MNIST's training split (`SCARCE_DATA`, the same
images for every method and seed), long enough that the plain network fits it: the regime in
which the papers claim their gains (CIFAR-100: 500 images a class, fitted almost perfectly).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
import numpy as np

from experiments import cli
from experiments.configs import common, reskd_chain
from gkt_jax import masks, methods

VARIANTS = common.VARIANTS  # label: (method, extra config fields); every row of a suite

# The scarce suites' training set and length (chosen by a pilot of the baseline alone: the
# plain network fits it, >= 0.995 training accuracy in eval mode, and tests >= 4 points lower).
SCARCE_DATA = {'train_examples_per_class': 200}
SCARCE_EPOCHS = 200
# Subnet levels every suite evaluates (GKT's default), one report column each.
LEVELS = masks.DEFAULT_LEVELS

# dataset, model fields, data options, duration, seeds, evaluators' subnet counts, ResKD
# chain or not; `pruned_depth=True` adds the pruned-depth evaluator to every cell's config;
# `added_evals` ({name: evaluator config}) evaluates each finished cell's final network with
# them afterwards (`reevaluate.evaluate_run`, results in the cell's added_evals.json), so
# cells trained before need not train again.
SUITES = {
    'digits': dict(dataset='digits', model={}, epochs=10, seeds=(0, 1), reskd=True,
                   num_chains=4, depth_subnets=8, reskd_epochs=10),
    # Issue 14's longer suite: 16 epochs (one cosine schedule per length), the baseline also
    # at 4 and 8; the BatchNorm ablation (gkt_every_pass) beside the default.
    'fmnist_long': dict(dataset='fashion_mnist', model={'width_multiplier': 0.5}, epochs=16,
                        seeds=(0, 1, 2), reskd=False, num_chains=4, depth_subnets=8,
                        labels=('baseline', 'stimulative', 'gkt', 'gkt_every_pass', 'ekd_fws'),
                        extra_lengths={'baseline': (4, 8)}),
    'fmnist': dict(dataset='fashion_mnist', model={'width_multiplier': 0.5}, epochs=2,
                   seeds=(0, 1, 2), reskd=True, num_chains=4, depth_subnets=8,
                   reskd_epochs=2),
    # The papers' regime, a plain network that fits its training set and tests well below it:
    # ResNet-20 and ResNet-56 at width 0.5. Cells listed in `cell_seeds` run on those seeds
    # only.
    'fmnist_scarce': dict(dataset='fashion_mnist', model={'width_multiplier': 0.5},
                          data_options=SCARCE_DATA, epochs=SCARCE_EPOCHS, seeds=(0, 1, 2),
                          reskd=False, num_chains=4, depth_subnets=8,
                          labels=('baseline', 'stochastic_depth', 'stimulative', 'gkt',
                                  'ekd_fws', 'stimulative_stpp', 'gkt_geometric',
                                  'stimulative_every_pass', 'gkt_every_pass', 'sandwich',
                                  'layerdrop', 'drop_path'),
                          cell_seeds={label: (0,) for label in (
                              'stimulative_stpp', 'gkt_geometric', 'stimulative_every_pass',
                              'gkt_every_pass', 'sandwich', 'layerdrop', 'drop_path')},
                          added_evals={'pruned_depth': dict(common.PRUNED_DEPTH_EVAL)}),
    'fmnist_scarce_r56': dict(dataset='fashion_mnist',
                              model={'arch': 'resnet56', 'width_multiplier': 0.5},
                              data_options=SCARCE_DATA, epochs=SCARCE_EPOCHS, seeds=(0, 1, 2),
                              reskd=False, num_chains=4, depth_subnets=8,
                              labels=('baseline', 'stimulative', 'gkt'),
                              added_evals={'pruned_depth': dict(common.PRUNED_DEPTH_EVAL)}),
}

_SUITE = flags.DEFINE_enum('suite', 'fmnist', list(SUITES), 'Which suite.')
_ROOT = flags.DEFINE_string('root', 'results', 'Where the runs go (summaries, configs and '
                            'metrics are committed; checkpoints and plots are not).')
_DOCS = flags.DEFINE_string('docs', 'docs/results', 'Where the report goes.')
_SEEDS = flags.DEFINE_list('seeds', None, 'Override the suite\'s seeds.')
_ONLY = flags.DEFINE_list('only', None, 'Run only these variants (labels).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Write the report from finished runs.')
_REPORT = flags.DEFINE_bool('report', True, 'Write the report after training (--noreport: '
                            'train only, e.g. when several invocations run in a row).')
_STEPS = flags.DEFINE_integer('total_steps', None, 'Override every run\'s length (tests).')
_EVALUATE_ONLY = flags.DEFINE_bool(
    'evaluate_only', False, 'Train nothing: evaluate the final network of every finished cell '
    'with the suite\'s added evaluators it lacks (needs the cells\' checkpoints), then report.')


def suite_cells(suite: dict) -> list[str]:
  """The suite's cells: variant labels at the suite's length, then 'label_{E}ep' for the
  variants it also trains for E epochs (suite['extra_lengths'])."""
  cells = list(suite.get('labels', VARIANTS))
  for label, lengths in suite.get('extra_lengths', {}).items():
    cells += [f'{label}_{e:g}ep' for e in lengths]
  return cells


def cell_seeds(suite: dict, cell: str) -> tuple[int, ...]:
  """The seeds a cell runs on: the suite's, or fewer (suite['cell_seeds'])."""
  return tuple(suite.get('cell_seeds', {}).get(cell, suite['seeds']))


def parse_cell(suite: dict, cell: str) -> tuple[str, float]:
  """(variant label, epochs) of a cell name."""
  if cell in VARIANTS:
    return cell, float(suite['epochs'])
  label, _, length = cell.rpartition('_')
  if label in VARIANTS and length.endswith('ep'):
    return label, float(length.removesuffix('ep'))
  raise ValueError(f'cell {cell!r}: not a variant {tuple(VARIANTS)} nor "<variant>_<E>ep"')


def baseline_cell(suite: dict, cell: str) -> str:
  """The baseline cell of the same length (what a cell's paired difference is against)."""
  _, epochs = parse_cell(suite, cell)
  return 'baseline' if epochs == suite['epochs'] else f'baseline_{epochs:g}ep'


def run_config(suite: dict, cell: str, seed: int, total_steps: int | None = None):
  """The run config of one cell: the method's config for the suite's dataset, changed only
  in seed, model, duration and evaluators (the same for every method of the suite)."""
  label, epochs = parse_cell(suite, cell)
  method, extra = VARIANTS[label]
  config = common.get_config(method, suite['dataset'])
  config.method.update(extra)
  config.model.update(suite['model'])
  config.data.options.update(suite.get('data_options', {}))
  config.seed = seed
  config.total_epochs = epochs
  config.eval_every_epochs = epochs  # final evaluation only
  config.evals = common.evals(levels=LEVELS, num_chains=suite['num_chains'],
                              depth_subnets=suite['depth_subnets'], method=method)
  if suite.get('pruned_depth'):  # LayerDrop's every-other pruning, for every method
    config.evals.pruned_depth = dict(common.PRUNED_DEPTH_EVAL)
  config.plots = False
  if total_steps:
    _short(config, total_steps)
  return config


def _short(config, total_steps: int) -> None:
  """A run of `total_steps` steps, logged and evaluated at the end (pipeline checks)."""
  for prefix in ('total', 'log_every', 'eval_every', 'ckpt_every'):
    config[f'{prefix}_epochs'] = None
    config[f'{prefix}_steps'] = total_steps if prefix != 'ckpt_every' else None


def reskd_config(suite: dict, seed: int, total_steps: int | None = None):
  config = reskd_chain.get_config(f"dataset={suite['dataset']}")
  for name in ('teacher', 'student', 'res_student'):
    stage = config[name]
    stage.seed = seed
    stage.total_epochs = float(suite['reskd_epochs'])
    stage.eval_every_epochs = float(suite['reskd_epochs'])
    stage.plots = False
    if total_steps:
      _short(stage, total_steps)
  return config


def run_suite(name: str, root: str, seeds, labels, total_steps=None, reskd=True,
              evaluate_only=False) -> None:
  """Trains every missing (label, seed) cell, seed by seed; the ResKD chain after the suite's
  first seed (its seed), also when `seeds` (--seeds) names only some of the suite's seeds.
  Every finished cell gets the suite's `added_evals` it lacks. `evaluate_only`: nothing is
  trained, only those evaluations run."""
  from gkt_jax.pipelines import reskd_chain  # pylint: disable=g-import-not-at-top
  from gkt_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  suite = SUITES[name]
  cells = [(seed, label) for seed in seeds for label in labels
           if seed in cell_seeds(suite, label)]
  total = len(cells)
  done = 0
  for seed in seeds:
    for label in (l for s, l in cells if s == seed):
      done += 1
      workdir = os.path.join(root, name, label, f'seed{seed}')
      if _finished(workdir, suite, label, seed, total_steps):
        print(f'[{done}/{total}] {name}: {label} seed {seed} finished ({workdir})', flush=True)
        add_evals(suite, workdir)
        continue
      if evaluate_only:
        print(f'[{done}/{total}] {name}: {label} seed {seed} not finished: left', flush=True)
        continue
      print(f'[{done}/{total}] {name}: {label} seed {seed} -> {workdir}', flush=True)
      start = time.perf_counter()
      result = train_and_evaluate(run_config(suite, label, seed, total_steps), workdir)
      if result.get('preempted'):
        raise SystemExit('stopped: run the same command again to continue the suite')
      print(f'[{done}/{total}] done in {time.perf_counter() - start:.0f}s: full accuracy '
            f'{result["full_accuracy"]:.4f}', flush=True)
      add_evals(suite, workdir)
    if evaluate_only:
      continue
    if reskd and suite['reskd'] and seed == suite['seeds'][0]:
      workdir = os.path.join(root, name, 'reskd', f'seed{seed}')
      if os.path.exists(os.path.join(workdir, 'summary.json')):
        print(f'{name}: ResKD chain, seed {seed} finished ({workdir})', flush=True)
        continue
      print(f'{name}: ResKD chain, seed {seed} -> {workdir}', flush=True)
      reskd_chain.run_chain(reskd_config(suite, seed, total_steps), workdir)


def missing_evals(suite: dict, workdir: str) -> dict:
  """The suite's `added_evals` that the finished cell in `workdir` reports neither from its
  own config (an entry equal to one of them) nor from an earlier added evaluation."""
  from gkt_jax.train import reevaluate  # pylint: disable=g-import-not-at-top
  wanted = suite.get('added_evals', {})
  if not wanted:
    return {}
  with open(os.path.join(workdir, 'config.json')) as f:
    own = (json.load(f).get('evals') or {}).values()
  done = reevaluate.added_evals(workdir)
  return {name: cfg for name, cfg in wanted.items()
          if name not in done and not any(_same_eval(cfg, o) for o in own)}


def _same_eval(a: dict, b: dict) -> bool:
  """Whether two evaluator entries are the same evaluation (lists and tuples alike)."""
  return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def add_evals(suite: dict, workdir: str) -> None:
  """Runs the suite's added evaluators the finished cell in `workdir` lacks on its final
  network; a cell without its checkpoints (e.g. a fresh clone's) is named and left."""
  from gkt_jax.train import checkpoint, reevaluate  # pylint: disable=g-import-not-at-top
  missing = missing_evals(suite, workdir)
  if not missing:
    return
  with checkpoint.read_only(workdir) as source:
    has_checkpoint = bool(source.all_steps())
  if not has_checkpoint:
    print(f'  {workdir}: no checkpoint, added evaluators {sorted(missing)} not run', flush=True)
    return
  start = time.perf_counter()
  results = reevaluate.evaluate_run(workdir, missing)
  print(f'  added {sorted(missing)} in {time.perf_counter() - start:.0f}s: '
        + ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
                    for k, v in sorted(results.items())), flush=True)


def _finished(workdir: str, suite: dict, label: str, seed: int, total_steps) -> bool:
  """A cell whose summary.json is of this method, seed and length, trained with the current
  config: its result is kept even without checkpoints (the summaries of finished cells are
  committed under results/)."""
  summary = _summary_if_current(workdir, suite, label, seed, total_steps)
  if summary is None:
    return False
  variant, epochs = parse_cell(suite, label)
  same_length = (summary['steps'] == total_steps if total_steps
                 else abs(summary['epochs'] - epochs) < 1e-6)
  return (summary['method'] == VARIANTS[variant][0] and summary['seed'] == seed
          and same_length)


# The config sections that decide a cell's result besides its length: a cell trained or
# evaluated with other values (e.g. before a default changed) is stale and is trained again.
_RESULT_SECTIONS = ('method', 'model', 'evals', 'data', 'optim', 'seed')


def _same_method(stored: dict | None, current: dict) -> bool:
  """Whether two `config.method` sections configure the same training: equal, or equal once
  read into the method's settings (a field added since a cell ran takes its default)."""
  if stored == current:
    return True
  if not stored or stored.get('name') != current['name']:
    return False
  method_cls = methods.REGISTRY[current['name']]
  try:
    return method_cls.read_settings(stored) == method_cls.read_settings(current)
  except ValueError:  # a field or value the method no longer accepts
    return False


def _set_options(data: dict | None) -> dict | None:
  """A stored data section without its unset (None) options: a cell trained before an option
  existed was trained as a config that leaves it unset is now."""
  if not data:
    return data
  options = {k: v for k, v in (data.get('options') or {}).items() if v is not None}
  return {**{k: v for k, v in data.items() if k != 'options'},
          **({'options': options} if options else {})}


def _summary_if_current(workdir: str, suite: dict, label: str, seed: int, total_steps=None):
  """The cell's summary, or None when it has none or its config.json differs from the
  config the suite would run now in any of _RESULT_SECTIONS."""
  paths = [os.path.join(workdir, f) for f in ('summary.json', 'config.json')]
  if not all(os.path.exists(p) for p in paths):
    return None
  with open(paths[1]) as f:
    stored = json.load(f)
  current = json.loads(run_config(suite, label, seed, total_steps).to_json_best_effort())
  stored['data'], current['data'] = (_set_options(stored.get('data')),
                                     _set_options(current.get('data')))
  if (any(stored.get(k) != current.get(k) for k in _RESULT_SECTIONS if k != 'method')
      or not _same_method(stored.get('method'), current['method'])):
    return None
  with open(paths[0]) as f:
    return json.load(f)


def _load(root, name, label, seed):
  """The cell's summary with its added evaluations' results (summary keys first), or None
  when it has not finished with the suite's current config."""
  from gkt_jax.train import reevaluate  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, name, label, f'seed{seed}')
  summary = _summary_if_current(workdir, SUITES[name], label, seed)
  if summary is None:
    return None
  return {**reevaluate.added_results(workdir, summary), **summary}


def _mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return ''
  std = values.std(ddof=1) if values.size > 1 else float('nan')
  return f'{values.mean():.4f} +- {std:.4f}' if values.size > 1 else f'{values.mean():.4f}'


def _mean_curve(runs, key: str) -> dict[int, float]:
  """{kept blocks: accuracy} of a depth curve, averaged over runs."""
  curve = {}
  for r in runs:
    for kept, acc, _ in r.get(key) or []:
      curve.setdefault(int(kept), []).append(acc)
  return {k: float(np.mean(v)) for k, v in sorted(curve.items())}


PRUNED_KEY, PRUNED_KEPT_KEY = 'pruned_acc/period2', 'pruned_kept/period2'


def aggregate(name: str, root: str, seeds, labels) -> dict:
  """Per variant: the values over the seeds that finished, and their statistics."""
  out = {}
  suite = SUITES[name]
  for label in labels:
    base = {s: _load(root, name, baseline_cell(suite, label), s) for s in seeds}
    runs = {s: _load(root, name, label, s) for s in seeds}
    runs = {s: r for s, r in runs.items() if r is not None}
    if not runs:
      continue
    full = [r['full_accuracy'] for r in runs.values()]
    # The regime (runs that measured it): the deployed network's training accuracy (eval
    # mode) and train minus test.
    train = {s: r['train_accuracy'] for s, r in runs.items()
             if r.get('train_accuracy') is not None}
    diffs = [r['full_accuracy'] - base[s]['full_accuracy'] for s, r in runs.items()
             if base.get(s)]
    time_ratio = [r['train_seconds'] / base[s]['train_seconds'] for s, r in runs.items()
                  if base.get(s)]
    levels = {g: [r.get(f'subnet_acc/level{g}') for r in runs.values()]
              for g in range(1, LEVELS + 1)}
    deletion = [(r['block_deletion_mean'] - r['full_accuracy'],
                 max(a for _, a in r['block_deletion']) - r['full_accuracy'])
                for r in runs.values() if r.get('block_deletion')]
    out[label] = {
        'method': VARIANTS[parse_cell(suite, label)[0]][0], 'seeds': sorted(runs),
        'full_accuracy': full,
        'train_accuracy': list(train.values()),
        'gap': [a - runs[s]['full_accuracy'] for s, a in train.items()],
        'train_seeds': sorted(train),
        'diff_vs_baseline': diffs, 'time_vs_baseline': time_ratio,
        'levels': {g: [v for v in vs if v is not None] for g, vs in levels.items()},
        'depth_curve': _mean_curve(runs.values(), 'depth_curve'),
        'nested_depth_curve': _mean_curve(runs.values(), 'nested_depth_curve'),
        # Mean and best single-block deletion minus the full network, per seed: > 0 means
        # deleting a block helps (the signature of foreign BatchNorm statistics).
        'deletion_mean_minus_full': [d[0] for d in deletion],
        'deletion_max_minus_full': [d[1] for d in deletion],
        'seconds_per_step': [r['seconds_per_step'] for r in runs.values()],
        'train_seconds': [r['train_seconds'] for r in runs.values()],
        'epochs': sorted({round(r['epochs'], 3) for r in runs.values()}),
        'steps': sorted({r['steps'] for r in runs.values()}),
        'batch_size': next(iter(runs.values()))['batch_size'],
        'code': sorted({r['code'] for r in runs.values() if r.get('code')}),
        'code_missing': sum(not r.get('code') for r in runs.values()),
        # LayerDrop's rule: every other droppable block pruned, no fine-tuning.
        'pruned': [r[PRUNED_KEY] for r in runs.values() if PRUNED_KEY in r],
        'pruned_kept': sorted({r[PRUNED_KEPT_KEY] for r in runs.values()
                               if PRUNED_KEPT_KEY in r}),
        'extra': {k: [r[k] for r in runs.values() if k in r]
                  for k in ('path_acc/cm1', 'path_acc/cm2', 'path_acc/ensemble')},
    }
  return out


def stale_lines(name: str, root: str, seeds, labels) -> list[str]:
  """A line naming every cell ('label seed k') with a summary.json that the report leaves
  out because its config is not the one the suite runs now (a default changed since)."""
  stale = [f'{label} seed {seed}' for label in labels for seed in seeds
           if os.path.exists(os.path.join(root, name, label, f'seed{seed}', 'summary.json'))
           and _load(root, name, label, seed) is None]
  return ['', 'Not counted (trained with a config the suite no longer runs; the same command '
          f'retrains them): {", ".join(stale)}.'] if stale else []


def deletion_lines(stats: dict) -> list[str]:
  """The single-block deletion table: per variant, deletion minus the full network."""
  lines = ['', 'Single-block deletion minus the full network (mean over seeds of: the mean over '
           'the droppable blocks, and the best block); > 0 means a deleted block helps:', '',
           '| method | full network | mean deletion - full | best deletion - full | '
           'seeds where a deletion helps |', '|---|---|---|---|---|']
  for label, s in stats.items():
    if s['deletion_max_minus_full']:
      helps = sum(d > 0 for d in s['deletion_max_minus_full'])
      lines.append(f'| {label} | {_mean_std(s["full_accuracy"])} | '
                   f'{_mean_std(s["deletion_mean_minus_full"])} | '
                   f'{_mean_std(s["deletion_max_minus_full"])} | '
                   f'{helps} of {len(s["deletion_max_minus_full"])} |')
  return lines


def bn_ablation_lines(stats: dict) -> list[str]:
  """The BatchNorm ablation table (X beside X_every_pass), every column over the seeds both
  finished."""
  ablation = [(label, f'{label}_every_pass') for label in stats
              if f'{label}_every_pass' in stats]
  lines = []
  if ablation:
    lines += ['', 'BatchNorm running statistics (`method.bn_stats`): updated by the full '
              'network\'s pass only (default) or by every pass in order (the authors\' '
              'loops); every column over the seeds both settings finished:', '',
              '| method | full_network: full | every_pass: full | every_pass - full_network '
              f'(paired) | level-{LEVELS}, full_network | level-{LEVELS}, every_pass | seed ids |',
              '|---|---|---|---|---|---|---|']
    for label, other in ablation:
      a, b = (_by_seed(stats[label]), _by_seed(stats[other]))
      common = sorted(set(a['full']) & set(b['full']))
      if not common:
        continue
      paired = [b['full'][s] - a['full'][s] for s in common]
      lines.append(' | '.join([
          f'| {label}', _mean_std([a['full'][s] for s in common]),
          _mean_std([b['full'][s] for s in common]), _mean_std(paired),
          _mean_std([a['level3'][s] for s in common if s in a['level3']]),
          _mean_std([b['level3'][s] for s in common if s in b['level3']]),
          ', '.join(map(str, common))]) + ' |')
  return lines


# The papers' claims, each "A beats B" on the deployed (full) network: GKT > ST > SD >
# baseline (GKT, AAAI 2024, Table 1) and EKD's main path > baseline (EKD-FWSNet).
CLAIMS = (('gkt', 'stimulative'), ('stimulative', 'stochastic_depth'),
          ('stochastic_depth', 'baseline'), ('gkt', 'baseline'), ('stimulative', 'baseline'),
          ('ekd_fws', 'baseline'))


def claims_lines(stats: dict) -> list[str]:
  """The papers' claims checked against the seed spread: for each pair of variants in
  `stats`, the paired difference over the seeds both finished and a verdict ("holds": every
  seed's difference > 0; "reversed": every seed's < 0; otherwise "not resolved by the seed
  spread"; one seed: not judged)."""
  rows = []
  for a, b in CLAIMS:
    if a not in stats or b not in stats:
      continue
    fa, fb = _by_seed(stats[a])['full'], _by_seed(stats[b])['full']
    common = sorted(set(fa) & set(fb))
    if not common:
      continue
    diffs = [fa[s] - fb[s] for s in common]
    if len(diffs) < 2:
      verdict = 'one seed: not judged'
    elif all(d > 0 for d in diffs):
      verdict = 'holds'
    elif all(d < 0 for d in diffs):
      verdict = 'reversed'
    else:
      verdict = 'not resolved by the seed spread'
    rows.append(f'| {a} > {b} | {_mean_std(diffs)} | '
                f'{", ".join(f"{d:+.4f}" for d in diffs)} | {verdict} |')
  if not rows:
    return []
  return ['', 'The papers\' claims (full network, paired by seed): "holds" when A beats B on '
          'every seed, "reversed" when B beats A on every seed:', '',
          '| claim | A - B (mean +- std) | per seed | verdict |', '|---|---|---|---|'] + rows


def _by_seed(stat: dict) -> dict:
  """{'full': {seed: accuracy}, 'level3': {seed: deepest level's accuracy}} of one
  `aggregate` row."""
  level3 = stat['levels'][LEVELS]
  return {'full': dict(zip(stat['seeds'], stat['full_accuracy'])),
          'level3': dict(zip(stat['seeds'], level3)) if len(level3) == len(stat['seeds'])
                    else {}}


def suite_command(name: str) -> str:
  """The reproduce command of suite `name`, with the given flags that change its numbers or
  where they are (--total_steps, --seeds, --root); --only, --report_only etc. do not."""
  parts = ['python -m experiments.reproduce', f'--suite {name}']
  for flag in (_STEPS, _SEEDS, _ROOT):
    if flags.FLAGS[flag.name].present:
      value = flag.value
      parts.append(f'--{flag.name}={",".join(value) if isinstance(value, list) else value}')
  return ' '.join(parts)


# The papers' regime: the plain network fits its training set and tests well below.
REGIME_TRAIN_ACCURACY = 0.995
REGIME_GAP = 0.04


def regime_lines(baseline: dict | None) -> list[str]:
  """Whether the baseline's runs are in the papers' regime, seed by seed: training accuracy
  >= REGIME_TRAIN_ACCURACY and train minus test >= REGIME_GAP."""
  if not baseline or not baseline['train_accuracy']:
    return []
  per_seed = [f'seed {seed}: {train:.4f} / {gap:+.4f}' for seed, train, gap in
              zip(baseline['train_seeds'], baseline['train_accuracy'], baseline['gap'])]
  met = sum(t >= REGIME_TRAIN_ACCURACY and g >= REGIME_GAP
            for t, g in zip(baseline['train_accuracy'], baseline['gap']))
  return ['', f'Regime of the plain network (baseline train accuracy / gap): '
          f'{"; ".join(per_seed)}. Train accuracy >= {REGIME_TRAIN_ACCURACY} and gap >= '
          f'{REGIME_GAP} (the papers\' regime) on {met} of {len(per_seed)} seeds.']


def suite_network(suite: dict) -> str:
  """E.g. 'ResNet-20 x0.5'."""
  arch = suite['model'].get('arch', 'resnet20')
  name = f'ResNet-{arch.removeprefix("resnet")}' if arch.startswith('resnet') else arch
  return f'{name} x{suite["model"].get("width_multiplier", 1.0):g}'


def suite_data(suite: dict) -> str:
  """E.g. 'fashion_mnist' or 'fashion_mnist, 500 training images a class'."""
  per_class = suite.get('data_options', {}).get('train_examples_per_class')
  return suite['dataset'] + (f', {per_class} training images a class' if per_class else '')


def report(name: str, root: str, docs: str, seeds, labels) -> str:
  from gkt_jax.train import reporting  # pylint: disable=g-import-not-at-top
  suite = SUITES[name]
  stats = aggregate(name, root, seeds, labels)
  if not stats:
    raise SystemExit(f'no finished runs under {root}/{name}')
  epochs = sorted({e for s in stats.values() for e in s['epochs']})
  steps = sorted({n for s in stats.values() for n in s['steps']})
  regime = any(s['train_accuracy'] for s in stats.values())
  pruned = any(s['pruned'] for s in stats.values())
  kept = sorted({k for s in stats.values() for k in s['pruned_kept']})
  codes = sorted({c for s in stats.values() for c in s['code']})
  unrecorded = sum(s['code_missing'] for s in stats.values())
  code = ', '.join(codes)
  if unrecorded:
    code += ('; ' if codes else '') + (f'not recorded in the summaries of {unrecorded} runs '
                                       f'(`git log -- {root}/{name}` dates them)')
  lines = [f'### Suite `{name}`: {suite_data(suite)}, {suite_network(suite)}, '
           f'{"/".join(f"{e:g}" for e in epochs)} epochs ({"/".join(map(str, steps))} '
           f'steps), seeds {list(seeds)}', '',
           f'Command: `{suite_command(name)}`. Machine: '
           f'{reporting.machine()}. Code: {code}. Accuracy: the final evaluation (not the '
           'best epoch) on the '
           'whole test set; "vs baseline" pairs each seed with the baseline of the same seed '
           'and length (same data order); mean +- std (ddof 1) over the seeds that finished.'
           + (' Train accuracy: the deployed network on the training images (eval mode, no '
              'augmentation; at most 10,000, a fixed sample); gap: train minus test.'
              if regime else ''),
           '',
           '| method | full network (final) | vs baseline (paired) | '
           + ('train accuracy | gap (train - test) | ' if regime else '')
           + ''.join(f'level-{g} | ' for g in range(1, LEVELS + 1))
           + ('every other block pruned | ' if pruned else '')
           + 'train time vs baseline | train FLOPs | seeds |',
           '|---|---|---|' + ('---|---|' if regime else '') + '---|' * LEVELS
           + ('---|' if pruned else '') + '---|---|---|']
  for label, s in stats.items():
    s['train_flops'] = train_flops(suite, label, s['steps'][0], s['batch_size'])
    lines.append('| ' + ' | '.join([
        label, _mean_std(s['full_accuracy']),
        ('+' if np.mean(s['diff_vs_baseline']) >= 0 else '') + _mean_std(s['diff_vs_baseline'])
        if s['diff_vs_baseline'] and label != baseline_cell(suite, label) else '']
        + ([_mean_std(s['train_accuracy']), _mean_std(s['gap'])] if regime else [])
        + [_mean_std(s['levels'][g]) for g in range(1, LEVELS + 1)]
        + ([_mean_std(s['pruned'])] if pruned else [])
        + [f'{np.mean(s["time_vs_baseline"]):.2f}x' if s['time_vs_baseline'] else '',
           f'{s["train_flops"]:.3g}', str(len(s['seeds']))]) + ' |')
  lines += ['', 'Train FLOPs: the expected FLOPs of the run\'s training steps, 3x the forward '
            'FLOPs of every trained pass (forward + backward), the subnets\' kept blocks '
            'counted over 64 draws of the method\'s own sampler (ST++ resized subnets counted '
            'at full size); train time: measured, evaluations excluded.'
            + (f' Every other block pruned: LayerDrop\'s rule, every second droppable block '
               f'(counted through the network) removed ({"/".join(map(str, kept))} blocks '
               'kept), no fine-tuning, the BatchNorm statistics the run evaluates with.'
               if pruned else '')]
  lines += regime_lines(stats.get('baseline'))
  lines += stale_lines(name, root, seeds, labels) + deletion_lines(stats)
  lines += bn_ablation_lines(stats)
  lines += claims_lines(stats)
  os.makedirs(docs, exist_ok=True)
  plot_path = os.path.join(docs, f'{name}_depth.png')
  _plot_depth(stats, plot_path, f'{suite["dataset"]}: accuracy vs kept blocks (mean over seeds)')
  lines += ['', f'![depth-accuracy]({os.path.basename(plot_path)})']
  reskd_seed = suite['seeds'][0]  # the chain runs on the suite's first seed only
  reskd_summary = os.path.join(root, name, 'reskd', f'seed{reskd_seed}', 'summary.json')
  if os.path.exists(reskd_summary):
    from gkt_jax.pipelines import reskd_chain  # pylint: disable=g-import-not-at-top
    with open(reskd_summary) as f:
      chain = json.load(f)
    reskd_plot = os.path.join(docs, f'{name}_reskd.png')
    reskd_chain.plot_accuracy_vs_cost(chain, reskd_plot)
    lines += ['', f'ResKD (our reading), seed {reskd_seed}:', '', reskd_chain.results_table(chain),
              '', f'![ResKD accuracy vs cost]({os.path.basename(reskd_plot)})']
    stats['reskd'] = chain
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(docs, f'{name}.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(docs, f'{name}.json'), 'w') as f:
    json.dump(stats, f, indent=2, default=float)
  return text


_FLOPS_CACHE: dict[tuple[str, str], float] = {}


def train_flops(suite: dict, cell: str, steps: int, batch_size: int, draws: int = 64) -> float:
  """Expected training FLOPs of a cell: steps x batch x 3 x the forward FLOPs per example of
  one step's trained passes, averaged over `draws` step keys (the masks the method draws)."""
  from experiments import bench_step  # pylint: disable=g-import-not-at-top
  from gkt_jax import data, models  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  label, _ = parse_cell(suite, cell)
  key = (suite['dataset'], json.dumps(suite['model'], sort_keys=True), label)
  if key not in _FLOPS_CACHE:
    config = run_config(suite, cell, 0)
    dataset = data.load_dataset(config.data.name, data_dir=config.data.get('dir'))
    method = methods.get_method(config.method,
                                models.from_config(config.model, dataset.num_classes))
    shape = tuple(dataset.image_shape)
    masks_of = jax.jit(method.masks_run)
    # A step's FLOPs are linear in its masks: the mean mask matrix gives the expected value.
    mean_masks = np.mean([np.asarray(masks_of(jax.random.key(i)), np.float64)
                          for i in range(draws)], axis=0)
    _FLOPS_CACHE[key] = 3.0 * bench_step.step_flops(method, shape, mean_masks)
  return _FLOPS_CACHE[key] * steps * batch_size


def _plot_depth(stats, path, title) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for ax, key, what in zip(axes, ('depth_curve', 'nested_depth_curve'),
                           ('prefix subnets (stimulative sampler)',
                            'nested subnets (GKT sampler)')):
    for label, s in stats.items():
      if s.get(key):
        kept, acc = zip(*s[key].items())
        ax.plot(kept, acc, marker='o', label=label)
    ax.set_xlabel('residual blocks kept')
    ax.set_title(what, fontsize=9)
  axes[0].set_ylabel('test accuracy')
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def same_data_suites(name: str) -> list[str]:
  """The suites trained on the same data as `name` (dataset and data options), which one
  accuracy-vs-compute plot shows together."""
  def data_key(suite):
    return suite['dataset'], json.dumps(suite.get('data_options', {}), sort_keys=True)
  return [n for n, s in SUITES.items() if data_key(s) == data_key(SUITES[name])]


def compute_plot_name(names) -> str:
  """'<dataset>_compute.png' for a whole training split, '<first suite>_compute.png' for a
  subset of one."""
  suite = SUITES[names[0]]
  return f'{names[0] if suite.get("data_options") else suite["dataset"]}_compute.png'


def compute_plot(root: str, docs: str, names) -> str | None:
  """Full-network accuracy against training compute (expected FLOPs, and measured train
  seconds) of every finished cell of the suites `names` (of one dataset), mean +- std over
  seeds; written to docs/<dataset>_compute.png. Returns its path, or None when no cell
  finished."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  points = []  # (variant, epochs, flops, seconds, accuracies)
  networks = {suite_network(SUITES[name]) for name in names}
  for name in names:
    suite = SUITES[name]
    for cell, s in aggregate(name, root, suite['seeds'], suite_cells(suite)).items():
      label, epochs = parse_cell(suite, cell)
      if len(networks) > 1:
        label = f'{label}, {suite_network(suite)}'
      flops = train_flops(suite, cell, s['steps'][0], s['batch_size'])
      points.append((label, epochs, flops, float(np.mean(s['train_seconds'])),
                     s['full_accuracy']))
  if not points:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
  colors = {}
  for label in sorted({p[0] for p in points}):
    colors[label] = f'C{len(colors)}'
    mine = sorted((p for p in points if p[0] == label), key=lambda p: p[2])
    for ax, index in zip(axes, (2, 3)):
      x = [p[index] for p in mine]
      y = [np.mean(p[4]) for p in mine]
      err = [np.std(p[4], ddof=1) if len(p[4]) > 1 else 0.0 for p in mine]
      ax.errorbar(x, y, yerr=err, marker='o', capsize=3, color=colors[label], label=label)
      for p, xi, yi in zip(mine, x, y):
        ax.annotate(f'{p[1]:g}ep', (xi, yi), fontsize=6, textcoords='offset points',
                    xytext=(3, 3))
  for ax, what in zip(axes, ('training FLOPs (expected, forward + backward)',
                             'measured train seconds (2-core CPU, shared)')):
    ax.set_xscale('log')
    ax.set_xlabel(what)
  axes[0].set_ylabel('full-network test accuracy (final)')
  axes[0].legend(fontsize=7)
  fig.suptitle(f'{suite_data(SUITES[names[0]])}: accuracy against training compute (mean +- '
               'std over seeds)', fontsize=9)
  fig.tight_layout()
  os.makedirs(docs, exist_ok=True)
  path = os.path.join(docs, compute_plot_name(names))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  suite = SUITES[_SUITE.value]
  seeds = tuple(int(s) for s in _SEEDS.value) if _SEEDS.value else suite['seeds']
  cells = suite_cells(suite)
  labels = [l for l in cells if not _ONLY.value or l in _ONLY.value]
  unknown = set(_ONLY.value or ()) - set(cells) - {'reskd'}
  if unknown:
    raise app.UsageError(f'--only: {sorted(unknown)} not in {cells + ["reskd"]}')
  if _REPORT_ONLY.value and _EVALUATE_ONLY.value:
    raise app.UsageError('--report_only and --evaluate_only: give one of them')
  if not _REPORT_ONLY.value:
    run_suite(_SUITE.value, _ROOT.value, seeds, labels, _STEPS.value,
              reskd=not _ONLY.value or 'reskd' in _ONLY.value,
              evaluate_only=_EVALUATE_ONLY.value)
  if not _REPORT.value:
    return
  print(report(_SUITE.value, _ROOT.value, _DOCS.value, seeds, cells))
  same_data = same_data_suites(_SUITE.value)
  path = compute_plot(_ROOT.value, _DOCS.value, same_data)
  if path:
    print(f'accuracy against training compute ({", ".join(same_data)}): {path}')


if __name__ == '__main__':
  app.run(main)
