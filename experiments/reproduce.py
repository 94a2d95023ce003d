r"""Runs a named results suite (every method x seeds, same data order) and writes its report.

  python -m experiments.reproduce --suite fmnist            # or: make results
  python -m experiments.reproduce --suite digits            # the pipeline's quick check
  python -m experiments.reproduce --suite fmnist --report_only

Every (method, seed) is one run of the trainer in ROOT/<suite>/<label>/seed<k> (ROOT: results/);
a finished run (its summary.json, committed) is not trained again and an interrupted one
resumes from its checkpoints, so the same command continues a suite.
Runs of one seed share the data order and the schedule (the batch of step s depends only on
(seed, s)). The report, written to docs/results/<suite>.md, .json and _depth.png, gives for
each method the final-evaluation (not best-epoch) test accuracy of the full network as mean
+- std over seeds, the difference from the baseline paired by seed, the subnet levels, the
depth-accuracy curve and the training time relative to the baseline; and the ResKD chain's
accuracy-vs-cost table when the suite has one.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
import numpy as np

from experiments.configs import common

VARIANTS = common.VARIANTS  # label: (method, extra config fields); every row of a suite

# dataset, model fields, duration, seeds, evaluators' subnet counts, ResKD chain or not.
SUITES = {
    'digits': dict(dataset='digits', model={}, epochs=10, seeds=(0, 1), reskd=True,
                   num_chains=4, depth_subnets=8, reskd_epochs=10),
    'fmnist': dict(dataset='fashion_mnist', model={'width_multiplier': 0.5}, epochs=2,
                   seeds=(0, 1, 2), reskd=True, num_chains=4, depth_subnets=8,
                   reskd_epochs=2),
}

_SUITE = flags.DEFINE_enum('suite', 'fmnist', list(SUITES), 'Which suite.')
_ROOT = flags.DEFINE_string('root', 'results', 'Where the runs go (summaries, configs and '
                            'metrics are committed; checkpoints and plots are not).')
_DOCS = flags.DEFINE_string('docs', 'docs/results', 'Where the report goes.')
_SEEDS = flags.DEFINE_list('seeds', None, 'Override the suite\'s seeds.')
_ONLY = flags.DEFINE_list('only', None, 'Run only these variants (labels).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Write the report from finished runs.')
_STEPS = flags.DEFINE_integer('total_steps', None, 'Override every run\'s length (tests).')


def run_config(suite: dict, label: str, seed: int, total_steps: int | None = None):
  """The run config of one cell: the method's config for the suite's dataset, changed only
  in seed, model, duration and evaluators (the same for every method of the suite)."""
  method, extra = VARIANTS[label]
  config = common.get_config(method, suite['dataset'])
  config.method.update(extra)
  config.model.update(suite['model'])
  config.seed = seed
  config.total_epochs = float(suite['epochs'])
  config.eval_every_epochs = float(suite['epochs'])  # final evaluation only
  config.evals = common.evals(levels=3, num_chains=suite['num_chains'],
                              depth_subnets=suite['depth_subnets'])
  if method == 'ekd_fws':
    config.evals.paths = dict(type='classmate_paths')
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
  config = common.reskd_chain_config(suite['dataset'])
  for name in ('teacher', 'student', 'res_student'):
    stage = config[name]
    stage.seed = seed
    stage.total_epochs = float(suite['reskd_epochs'])
    stage.eval_every_epochs = float(suite['reskd_epochs'])
    stage.plots = False
    if total_steps:
      _short(stage, total_steps)
  return config


def run_suite(name: str, root: str, seeds, labels, total_steps=None, reskd=True) -> None:
  """Trains every missing (label, seed) cell, seed by seed; the ResKD chain after the suite's
  first seed (its seed), also when `seeds` (--seeds) names only some of the suite's seeds."""
  from gkt_jax.train import reskd_chain, train_and_evaluate  # pylint: disable=g-import-not-at-top
  suite = SUITES[name]
  total = len(seeds) * len(labels)
  done = 0
  for seed in seeds:
    for label in labels:
      done += 1
      workdir = os.path.join(root, name, label, f'seed{seed}')
      if _finished(workdir, suite, label, seed, total_steps):
        print(f'[{done}/{total}] {name}: {label} seed {seed} finished ({workdir})', flush=True)
        continue
      print(f'[{done}/{total}] {name}: {label} seed {seed} -> {workdir}', flush=True)
      start = time.perf_counter()
      result = train_and_evaluate(run_config(suite, label, seed, total_steps), workdir)
      if result.get('preempted'):
        raise SystemExit('stopped: run the same command again to continue the suite')
      print(f'[{done}/{total}] done in {time.perf_counter() - start:.0f}s: full accuracy '
            f'{result["full_accuracy"]:.4f}', flush=True)
    if reskd and suite['reskd'] and seed == suite['seeds'][0]:
      workdir = os.path.join(root, name, 'reskd', f'seed{seed}')
      if os.path.exists(os.path.join(workdir, 'summary.json')):
        print(f'{name}: ResKD chain, seed {seed} finished ({workdir})', flush=True)
        continue
      print(f'{name}: ResKD chain, seed {seed} -> {workdir}', flush=True)
      reskd_chain.run_chain(reskd_config(suite, seed, total_steps), workdir)


def _finished(workdir: str, suite: dict, label: str, seed: int, total_steps) -> bool:
  """A cell whose summary.json is of this method, seed and length: its result is kept even
  without checkpoints (the summaries of finished cells are committed under results/)."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    summary = json.load(f)
  same_length = (summary['steps'] == total_steps if total_steps
                 else abs(summary['epochs'] - suite['epochs']) < 1e-6)
  return (summary['method'] == VARIANTS[label][0] and summary['seed'] == seed
          and same_length)


def _load(root, name, label, seed):
  path = os.path.join(root, name, label, f'seed{seed}', 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return ''
  std = values.std(ddof=1) if values.size > 1 else float('nan')
  return f'{values.mean():.4f} +- {std:.4f}' if values.size > 1 else f'{values.mean():.4f}'


def aggregate(name: str, root: str, seeds, labels) -> dict:
  """Per variant: the values over the seeds that finished, and their statistics."""
  out = {}
  base = {s: _load(root, name, 'baseline', s) for s in seeds}
  for label in labels:
    runs = {s: _load(root, name, label, s) for s in seeds}
    runs = {s: r for s, r in runs.items() if r is not None}
    if not runs:
      continue
    full = [r['full_accuracy'] for r in runs.values()]
    diffs = [r['full_accuracy'] - base[s]['full_accuracy'] for s, r in runs.items()
             if base.get(s)]
    time_ratio = [r['train_seconds'] / base[s]['train_seconds'] for s, r in runs.items()
                  if base.get(s)]
    levels = {g: [r.get(f'subnet_acc/level{g}') for r in runs.values()] for g in (1, 2, 3)}
    curve = {}
    for r in runs.values():
      for kept, acc, _ in r.get('depth_curve') or []:
        curve.setdefault(int(kept), []).append(acc)
    out[label] = {
        'method': VARIANTS[label][0], 'seeds': sorted(runs), 'full_accuracy': full,
        'diff_vs_baseline': diffs, 'time_vs_baseline': time_ratio,
        'levels': {g: [v for v in vs if v is not None] for g, vs in levels.items()},
        'depth_curve': {k: float(np.mean(v)) for k, v in sorted(curve.items())},
        'seconds_per_step': [r['seconds_per_step'] for r in runs.values()],
        'epochs': sorted({round(r['epochs'], 3) for r in runs.values()}),
        'steps': sorted({r['steps'] for r in runs.values()}),
        'extra': {k: [r[k] for r in runs.values() if k in r]
                  for k in ('path_acc/cm1', 'path_acc/cm2', 'path_acc/ensemble')},
    }
  return out


def report(name: str, root: str, docs: str, seeds, labels) -> str:
  from gkt_jax.train import reporting  # pylint: disable=g-import-not-at-top
  suite = SUITES[name]
  stats = aggregate(name, root, seeds, labels)
  if not stats:
    raise SystemExit(f'no finished runs under {root}/{name}')
  first = next(iter(stats.values()))
  width = suite['model'].get('width_multiplier', 1.0)
  lines = [f'### Suite `{name}`: {suite["dataset"]}, ResNet-20 x{width:g}, '
           f'{"/".join(map(str, first["epochs"]))} epochs ({"/".join(map(str, first["steps"]))} '
           f'steps), seeds {list(seeds)}', '',
           f'Command: `python -m experiments.reproduce --suite {name}`. Machine: '
           f'{reporting.machine()}. Accuracy: the final evaluation (not the best epoch) on the '
           'whole test set; "vs baseline" pairs each seed with the baseline of the same seed '
           '(same data order); mean +- std (ddof 1) over the seeds that finished.', '',
           '| method | full network (final) | vs baseline (paired) | level-1 | level-2 | '
           'level-3 | train time vs baseline | seeds |', '|---|---|---|---|---|---|---|---|']
  for label, s in stats.items():
    lines.append('| ' + ' | '.join([
        label, _mean_std(s['full_accuracy']),
        ('+' if np.mean(s['diff_vs_baseline']) >= 0 else '') + _mean_std(s['diff_vs_baseline'])
        if s['diff_vs_baseline'] and label != 'baseline' else '',
        _mean_std(s['levels'][1]), _mean_std(s['levels'][2]), _mean_std(s['levels'][3]),
        f'{np.mean(s["time_vs_baseline"]):.2f}x' if s['time_vs_baseline'] else '',
        str(len(s['seeds']))]) + ' |')
  os.makedirs(docs, exist_ok=True)
  plot_path = os.path.join(docs, f'{name}_depth.png')
  _plot_depth(stats, plot_path, f'{suite["dataset"]}: accuracy vs kept blocks '
              '(prefix subnets, mean over seeds)')
  lines += ['', f'![depth-accuracy]({os.path.basename(plot_path)})']
  reskd_seed = suite['seeds'][0]  # the chain runs on the suite's first seed only
  reskd_summary = os.path.join(root, name, 'reskd', f'seed{reskd_seed}', 'summary.json')
  if os.path.exists(reskd_summary):
    from gkt_jax.train import reskd_chain  # pylint: disable=g-import-not-at-top
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


def _plot_depth(stats, path, title) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for label, s in stats.items():
    if s.get('depth_curve'):
      kept, acc = zip(*s['depth_curve'].items())
      ax.plot(kept, acc, marker='o', label=label)
  ax.set_xlabel('residual blocks kept')
  ax.set_ylabel('test accuracy')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  suite = SUITES[_SUITE.value]
  seeds = tuple(int(s) for s in _SEEDS.value) if _SEEDS.value else suite['seeds']
  labels = [l for l in VARIANTS if not _ONLY.value or l in _ONLY.value]
  unknown = set(_ONLY.value or ()) - set(VARIANTS) - {'reskd'}
  if unknown:
    raise app.UsageError(f'--only: {sorted(unknown)} not in {list(VARIANTS) + ["reskd"]}')
  if not _REPORT_ONLY.value:
    run_suite(_SUITE.value, _ROOT.value, seeds, labels, _STEPS.value,
              reskd=not _ONLY.value or 'reskd' in _ONLY.value)
  print(report(_SUITE.value, _ROOT.value, _DOCS.value, seeds, list(VARIANTS)))


if __name__ == '__main__':
  app.run(main)
