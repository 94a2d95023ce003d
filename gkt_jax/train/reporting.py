"""Metrics file, terminal progress, summary and plots of a run (process 0 writes)."""

from __future__ import annotations

from collections.abc import Callable
import json
import math
import os
import platform
import subprocess
import time

import numpy as np

from gkt_jax import evaluate
from gkt_jax.utils import format_seconds


def machine() -> str:
  """'<host CPU model>, <n> cores; <backend> (<device kind>) x <devices>': the machine a
  number was measured on, for the tables that quote it."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  import jax  # pylint: disable=g-import-not-at-top
  return (f'{model}, {os.cpu_count()} cores; {jax.default_backend()} '
          f'({jax.devices()[0].device_kind}) x {jax.device_count()}')


def code_version() -> str:
  """'<package version>+git.<commit>' ('.dirty' with uncommitted changes to tracked files)
  when the library runs from a checkout of its own repository, else the package version:
  the code a number was measured with, for summaries and benchmark tables."""
  from gkt_jax import __version__  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

  def git(*args: str) -> str:
    return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    # An installed copy inside some other repository is not that repository's code.
    if os.path.realpath(git('rev-parse', '--show-toplevel')) != os.path.realpath(root):
      return __version__
    commit = git('rev-parse', '--short=7', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no', '--', 'gkt_jax',
                     'experiments'))
  except (OSError, subprocess.SubprocessError):
    return __version__
  return f'{__version__}+git.{commit}' + ('.dirty' if dirty else '')


class MetricWriter:
  """Appends one JSON object per call to `workdir/metrics.jsonl`."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), **_jsonable(values)}) + '\n')

  def truncate_after(self, step: int) -> None:
    """Drops the rows of steps > `step` (a resumed run writes them again); 0: all rows."""
    if not self.enabled or not os.path.exists(self.path):
      return
    kept = [json.dumps(r) + '\n' for r in read_metrics(os.path.dirname(self.path))
            if r['step'] <= step] if step else []
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a killed run
        continue
  return records


def _jsonable(values):
  if isinstance(values, dict):
    return {k: _jsonable(v) for k, v in values.items()}
  if isinstance(values, (list, tuple)):
    return [_jsonable(v) for v in values]
  if isinstance(values, (np.ndarray, np.generic)) or hasattr(values, 'tolist'):
    return _jsonable(np.asarray(values).tolist())
  return values


def check_finite(step: int, values: dict) -> None:
  """Raises FloatingPointError naming the step and the first non-finite term."""
  for name, value in values.items():
    if isinstance(value, float) and not math.isfinite(value):
      raise FloatingPointError(f'step {step}: {name} = {value}; stopping the run')


class Progress:
  """One line per log step with throughput and ETA."""

  def __init__(self, total_steps: int, start_step: int, batch_size: int, enabled: bool = True):
    self.total = total_steps
    self.start_step = start_step
    self.batch_size = batch_size
    self.enabled = enabled
    self.t0 = None
    self.last_time = None
    self.last_step = None

  def start(self, step: int) -> None:
    """Called once the first (compiled) step has finished."""
    self.t0 = self.last_time = time.perf_counter()
    self.start_step = self.last_step = step

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (e.g. an evaluation) out of the throughput and the ETA."""
    if self.t0 is not None:
      self.t0 += seconds
      self.last_time += seconds

  def rate(self, step: int) -> float:
    """Images per second since the previous call."""
    now = time.perf_counter()
    rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
    self.last_time, self.last_step = now, step
    return rate

  def line(self, step: int, values: dict, rate: float) -> None:
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.t0
    done = step - self.start_step
    eta = elapsed / max(done, 1) * (self.total - step)
    shown = ' '.join(f'{k} {v:.4g}' for k, v in values.items()
                     if isinstance(v, float) and not k.startswith('kept'))
    print(f'step {step}/{self.total} ({100 * step / self.total:.0f}%) | {shown} | '
          f'{rate:.0f} img/s | elapsed {format_seconds(elapsed)} ETA {format_seconds(eta)}',
          flush=True)


def final_table(summary: dict) -> str:
  """A small text table of the headline accuracies."""
  rows = [('full network', summary.get('full_accuracy'))] + evaluate.summary_rows(summary)
  width = max(len(r[0]) for r in rows)
  lines = [f'{"network".ljust(width)}  test accuracy', '-' * (width + 15)]
  lines += [f'{name.ljust(width)}  {acc:.4f}' for name, acc in rows if acc is not None]
  if summary.get('train_accuracy') is not None:
    lines.append(f'deployed network on {summary["train_accuracy_examples"]} training images '
                 f'(eval mode): {summary["train_accuracy"]:.4f}, train - test '
                 f'{summary["generalization_gap"]:+.4f}')
  return '\n'.join(lines)


def plot_run(workdir: str, summary: dict,
             is_loss_term: Callable[[str], bool] = lambda name: name == 'loss') -> list[str]:
  """Writes plots/training_curves.png and plots/depth_accuracy.png; returns their paths.
  The loss plot draws the step measurements `is_loss_term` names (a method's
  `is_loss_term`)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
  written = []
  train = [r for r in records if 'loss' in r]
  evals = [r for r in records if 'eval/full_accuracy' in r]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  if train:
    steps = [r['step'] for r in train]
    terms = [k for k in train[-1] if is_loss_term(k)]
    for term in terms:
      # A log axis cannot show 0 (e.g. a KL term of a step that drew the full network):
      # such points are left out, not drawn as drops off the axis.
      values = np.asarray([r.get(term, np.nan) for r in train], np.float64)
      values[values <= 0] = np.nan
      if np.isfinite(values).any():
        axes[0].plot(steps, values, label=term)
    axes[0].set_yscale('log')
    axes[0].set_xlabel('step')
    axes[0].set_title('training loss terms')
    axes[0].legend(fontsize=7)
  curves = tuple('eval/' + p for p in evaluate.CURVE_PREFIXES)
  for key in [k for k in (evals[-1] if evals else {}) if k.startswith('eval/')
              and k.endswith('accuracy') or k.startswith(curves)]:
    axes[1].plot([r['step'] for r in evals], [r.get(key, np.nan) for r in evals], marker='o',
                 label=key.removeprefix('eval/'))
  axes[1].set_xlabel('step')
  axes[1].set_title('test accuracy')
  if evals:
    axes[1].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, 'plots', 'training_curves.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  written.append(path)

  if summary.get('depth_curve'):
    curve = np.array(summary['depth_curve'], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve[:, 0], curve[:, 1], marker='o', label='sampled subnets (prefix sampler)')
    for level, kept, acc in evaluate.level_points(summary):
      ax.scatter([kept], [acc], marker='s', label=f'level-{level} subnets (mean)')
    ax.set_xlabel('residual blocks kept')
    ax.set_ylabel('test accuracy')
    ax.set_title(f'{summary.get("method", "")}: accuracy vs depth')
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(workdir, 'plots', 'depth_accuracy.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written
