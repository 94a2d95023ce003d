"""ResKD's whole chain: train teacher, student and res-students, then measure accuracy vs cost.

  run_chain(config, root) -> summary
trains, in root/: teacher/ (method baseline), student/ (kd), res1/ .. resK/ (reskd), each a
normal `train_and_evaluate` run whose config names the workdirs of the frozen stages before
it. A finished stage is not trained again (its workdir returns its summary), and an
interrupted one resumes, so running the same command again continues the chain. Then
`analyze_chain` writes root/summary.json, root/accuracy_vs_cost.md and
root/plots/accuracy_vs_cost.png.

`config` holds full run configs `teacher`, `student` and `res_student` (the template of
every res-student), `num_res_students` K, and `analysis` (rule, thresholds, the threshold
the adaptive predictor is run at, eval_batch_size).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gkt_jax import data as data_lib
from gkt_jax import evaluate
from gkt_jax.evaluate import adaptive
from gkt_jax.methods import reskd
from gkt_jax.train import export, reporting, validate
from gkt_jax.train.trainer import train_and_evaluate


def stage_configs(config: ml_collections.ConfigDict, root: str) -> list[tuple[str, object]]:
  """[(name, run config)] of the chain, in training order, with the frozen workdirs set
  (absolute: a stage's config must name the same runs from any working directory)."""
  root = os.path.abspath(root)
  teacher_dir = os.path.join(root, 'teacher')
  student_dir = os.path.join(root, 'student')
  stages = [('teacher', config.teacher.copy_and_resolve_references())]
  student = config.student.copy_and_resolve_references()
  student.method.teacher = teacher_dir
  stages.append(('student', student))
  for k in range(1, int(config.num_res_students) + 1):
    res = config.res_student.copy_and_resolve_references()
    res.method.teacher = teacher_dir
    res.method.student = student_dir
    res.method.res_students = tuple(os.path.join(root, f'res{j}') for j in range(1, k))
    stages.append((f'res{k}', res))
  return stages


def run_chain(config: ml_collections.ConfigDict, root: str, *, log=print) -> dict:
  """Trains every stage not yet finished, then analyses the chain; returns the summary."""
  if int(config.num_res_students) < 1:
    raise validate.ConfigError(
        f'config.num_res_students={config.num_res_students!r}: must be an integer >= 1')
  os.makedirs(root, exist_ok=True)
  for name, stage in stage_configs(config, root):
    log(f'=== ResKD stage {name} ({stage.method.name}, {stage.model.arch} x'
        f'{stage.model.get("width_multiplier", 1.0)}) in {os.path.join(root, name)}')
    result = train_and_evaluate(stage, os.path.join(root, name))
    if result.get('preempted'):
      log(f'stopped during stage {name}: run the same command again to continue')
      return result
  return analyze_chain(config, root, log=log)


def _stage_fns(student, residuals):
  """AdaptivePredictor's stage functions for frozen (model, variables) networks."""
  s_model, s_vars = student

  def student_fn(images):
    logits, features = s_model.apply(s_vars, images, train=False)
    return logits, features['pre_logits']

  def residual_fn(model, variables):
    uses_side = bool(getattr(model, 'side_features_dim', 0))

    def fn(images, side):
      kwargs = {'side_features': side} if uses_side else {}
      return model.apply(variables, images, train=False, **kwargs)[0]
    return fn

  return [student_fn] + [residual_fn(m, v) for m, v in residuals]


def network_flops(model, variables, input_shape) -> float:
  """XLA's FLOPs per example of one network's inference forward (a res-student's side
  features are an input: the student computed them)."""
  dim = int(getattr(model, 'side_features_dim', 0))

  def apply_fn(v, x):
    kwargs = {'side_features': jnp.zeros((x.shape[0], dim))} if dim else {}
    return model.apply(v, x, train=False, **kwargs)[0]

  return evaluate.xla_forward_flops(apply_fn, variables, input_shape)


def analyze_chain(config: ml_collections.ConfigDict, root: str, *, log=print) -> dict:
  """Accuracy vs % of the teacher's FLOPs of the trained chain in root (see module doc)."""
  stages = stage_configs(config, root)
  teacher = export.load_run(os.path.join(root, 'teacher'))[:2]
  student = export.load_run(os.path.join(root, 'student'))[:2]
  residuals = [export.load_run(os.path.join(root, name))[:2] for name, _ in stages[2:]]
  data_cfg = stages[0][1].data
  dataset = data_lib.load_dataset(data_cfg.name, data_dir=data_cfg.get('dir'),
                                  **dict(data_cfg.get('options', None) or {}))
  analysis = config.analysis
  teacher_logits, stage_logits, labels = _test_logits(dataset, teacher, student, residuals,
                                                      int(analysis.eval_batch_size))
  shape = tuple(dataset.image_shape)
  teacher_flops = network_flops(*teacher, shape)
  stage_flops = [network_flops(*student, shape)] + [network_flops(*r, shape)
                                                     for r in residuals]
  combined = np.asarray(adaptive.combined_logits(stage_logits))
  stage_acc = [float((combined[k].argmax(-1) == labels).mean()) for k in range(len(combined))]
  teacher_acc = float((teacher_logits.argmax(-1) == labels).mean())
  rows = adaptive.sweep(stage_logits, labels, stage_flops, teacher_flops,
                        analysis.thresholds, rule=analysis.rule)
  cumulative = np.cumsum(stage_flops)

  summary = {
      'method': 'reskd (our reading)', 'dataset': data_cfg.name, 'root': os.path.abspath(root),
      'rule': analysis.rule, 'num_test': int(len(labels)),
      'teacher': {'arch': stages[0][1].model.arch, 'accuracy': teacher_acc,
                  'flops': teacher_flops},
      'stages': [{'name': name, 'arch': cfg.model.arch,
                  'width_multiplier': cfg.model.get('width_multiplier', 1.0),
                  'flops': flops, 'cost_pct': 100.0 * flops / teacher_flops,
                  'combined_accuracy': acc,
                  'combined_cost_pct': 100.0 * cum / teacher_flops}
                 for (name, cfg), flops, acc, cum in zip(stages[1:], stage_flops, stage_acc,
                                                         cumulative)],
      'student_alone': {'accuracy': stage_acc[0], 'cost_pct': 100.0 * stage_flops[0]
                        / teacher_flops},
      'full_chain': {'accuracy': stage_acc[-1], 'cost_pct': 100.0 * cumulative[-1]
                     / teacher_flops},
      'sweep': rows,
      'adaptive_predictor': _adaptive_predictor(dataset, student, residuals, analysis,
                                                stage_logits, labels, stage_flops,
                                                teacher_flops),
      'flops_source': f'XLA cost analysis ({jax.default_backend()}), batch 1',
  }
  _write_analysis(root, summary, log)
  if not summary['adaptive_predictor']['agrees_with_sweep']:
    raise RuntimeError('the adaptive predictor disagreed with the all-stages computation')
  return summary


def _test_logits(dataset, teacher, student, residuals, batch_size: int):
  """(teacher logits [N, C], every stage's logits [K, N, C], labels [N]) on the test set."""

  @jax.jit
  def all_logits(images):
    x = data_lib.normalize(images, dataset.mean, dataset.std)
    return (teacher[0].apply(teacher[1], x, train=False)[0],
            reskd.chain_logits(student, residuals, x))

  teacher_logits, stage_logits, labels = [], [], []
  for images, batch_labels, num_valid in dataset.eval_batches(batch_size):
    t, s = all_logits(images)
    teacher_logits.append(np.asarray(t)[:num_valid])
    stage_logits.append(np.asarray(s)[:, :num_valid])
    labels.append(np.asarray(batch_labels)[:num_valid])
  return (np.concatenate(teacher_logits), np.concatenate(stage_logits, axis=1),
          np.concatenate(labels))


def _adaptive_predictor(dataset, student, residuals, analysis, stage_logits, labels,
                        stage_flops, teacher_flops) -> dict:
  """The adaptive predictor itself (stage k only on undecided samples) at one threshold: it
  must take the decisions of the sweep, which ran every stage on every sample."""
  predictor = adaptive.AdaptivePredictor(_stage_fns(student, residuals), analysis.rule,
                                         analysis.predictor_threshold)
  preds, stops = [], []
  start = time.perf_counter()
  for images, _, num_valid in dataset.eval_batches(int(analysis.eval_batch_size)):
    p, s = predictor(data_lib.normalize(images, dataset.mean, dataset.std))
    preds.append(p[:num_valid])
    stops.append(s[:num_valid])
  seconds = time.perf_counter() - start
  preds, stops = np.concatenate(preds), np.concatenate(stops)
  want_preds, want_stops = adaptive.adaptive_predictions(stage_logits, analysis.rule,
                                                         analysis.predictor_threshold)
  # Two compiled programs (whole batches vs gathered subsets) may round a confidence that
  # sits on the threshold differently: allow one sample in a thousand.
  agree = bool(np.mean(stops == np.asarray(want_stops)) > 0.999
               and np.mean(preds == np.asarray(want_preds)) > 0.999)
  return {'threshold': float(analysis.predictor_threshold),
          'accuracy': float((preds == labels).mean()),
          'expected_cost_pct': adaptive.expected_cost(stops, stage_flops,
                                                      teacher_flops)['expected_cost_pct'],
          'samples_run_per_stage': [int(n) for n in predictor.samples_run],
          'seconds': seconds, 'agrees_with_sweep': agree}


def _write_analysis(root: str, summary: dict, log) -> None:
  """summary.json, accuracy_vs_cost.md and its plot in root; the table on the log."""
  with open(os.path.join(root, 'summary.json'), 'w') as f:
    json.dump(reporting._jsonable(summary), f, indent=2)
  table = results_table(summary)
  with open(os.path.join(root, 'accuracy_vs_cost.md'), 'w') as f:
    f.write(table + '\n')
  plot_path = plot_accuracy_vs_cost(summary, os.path.join(root, 'plots',
                                                          'accuracy_vs_cost.png'))
  log(table)
  log(f'wrote {root}/summary.json, accuracy_vs_cost.md, {plot_path}')


def results_table(summary: dict) -> str:
  """Markdown: the networks of the chain, then the threshold sweep."""
  t = summary['teacher']
  lines = ['| network | FLOPs/image | % of teacher | accuracy (this and earlier stages) |',
           '|---|---|---|---|',
           f'| teacher {t["arch"]} | {t["flops"]:,.0f} | 100.0 | {t["accuracy"]:.4f} |']
  for s in summary['stages']:
    lines.append(f'| {s["name"]} {s["arch"]} x{s["width_multiplier"]:g} | {s["flops"]:,.0f} | '
                 f'{s["cost_pct"]:.2f} (chain {s["combined_cost_pct"]:.2f}) | '
                 f'{s["combined_accuracy"]:.4f} |')
  lines += ['', f'| {summary["rule"]} threshold | accuracy | expected % of teacher FLOPs | '
            'worst case % | samples reaching each stage |', '|---|---|---|---|---|']
  for r in summary['sweep']:
    lines.append(f'| {r["threshold"]:g} | {r["accuracy"]:.4f} | {r["expected_cost_pct"]:.2f} | '
                 f'{r["worst_cost_pct"]:.2f} | '
                 + ' / '.join(f'{x:.3f}' for x in r['reach']) + ' |')
  return '\n'.join(lines)


def plot_accuracy_vs_cost(summary: dict, path: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  rows = sorted(summary['sweep'], key=lambda r: r['expected_cost_pct'])
  ax.plot([r['expected_cost_pct'] for r in rows], [r['accuracy'] for r in rows], marker='.',
          label=f'adaptive chain (sweeping the {summary["rule"]} threshold)')
  ax.scatter([100.0], [summary['teacher']['accuracy']], marker='*', s=120, color='k',
             label='teacher', zorder=3)
  ax.scatter([summary['student_alone']['cost_pct']], [summary['student_alone']['accuracy']],
             marker='s', color='tab:red', label='KD student alone', zorder=3)
  ax.scatter([summary['full_chain']['cost_pct']], [summary['full_chain']['accuracy']],
             marker='D', color='tab:green', label='full chain (every stage)', zorder=3)
  ax.set_xscale('log')
  ax.set_xlabel('FLOPs per image, % of the teacher (log scale)')
  ax.set_ylabel('test accuracy')
  ax.set_title(f'ResKD (our reading), {summary["dataset"]}')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
