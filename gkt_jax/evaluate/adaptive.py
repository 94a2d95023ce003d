"""Sample-adaptive inference over a chain of stages (ResKD: student, then res-students).

The stage logits of a chain are [z_S, r_1, ..., r_K]; the prediction after stage k is the
argmax of z_S + r_1 + ... + r_k. A sample stops at the first stage whose combined prediction
is confident (rule 'max_prob': max softmax >= threshold; rule 'entropy': entropy (nats) <=
threshold); a sample never confident runs every stage. Its cost is the FLOPs of the stages
it ran. Pure functions here; `AdaptivePredictor` runs a chain of networks that way.

  threshold 0 with 'max_prob': every sample stops at the student;
  threshold > 1 with 'max_prob' (or < 0 with 'entropy'): every sample runs every stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

RULES = ('max_prob', 'entropy')


def combined_logits(stage_logits: jax.Array) -> jax.Array:
  """f32[K+1, B, C] -> f32[K+1, B, C]: entry k is the sum of stages 0..k."""
  return jnp.cumsum(jnp.asarray(stage_logits, jnp.float32), axis=0)


def confident(logits: jax.Array, rule: str, threshold: float) -> jax.Array:
  """bool[...]: whether the prediction from logits f32[..., C] passes the rule."""
  if rule not in RULES:
    raise ValueError(f'rule={rule!r} is not one of {RULES}')
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  if rule == 'max_prob':
    return jnp.max(jnp.exp(log_p), axis=-1) >= threshold
  entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  return entropy <= threshold


def stop_stages(stage_logits: jax.Array, rule: str, threshold: float) -> jax.Array:
  """int32[B]: the first stage whose combined prediction is confident, else K (the last).

  Args:
    stage_logits: f32[K+1, B, C], [z_S, r_1, ..., r_K].
  """
  passed = confident(combined_logits(stage_logits), rule, threshold)  # [K+1, B]
  passed = passed.at[-1].set(True)  # the last stage always answers
  return jnp.argmax(passed, axis=0).astype(jnp.int32)


def adaptive_predictions(stage_logits: jax.Array, rule: str, threshold: float):
  """(predictions int32[B], stop stage int32[B]) of the sample-adaptive chain."""
  stops = stop_stages(stage_logits, rule, threshold)
  combined = combined_logits(stage_logits)
  at_stop = jnp.take_along_axis(combined, stops[None, :, None], axis=0)[0]
  return jnp.argmax(at_stop, axis=-1).astype(jnp.int32), stops


def expected_cost(stops, stage_flops: Sequence[float], reference_flops: float) -> dict:
  """Cost of samples that stopped at `stops` int[B] (each ran stages 0..stop).

  Returns {'expected_cost_pct': mean over samples of their FLOPs as % of reference_flops
  (e.g. the teacher's), 'worst_cost_pct': every stage, 'reach': fraction of samples that ran
  each stage (f64[K+1])}.
  """
  stops = np.asarray(stops)
  flops = np.asarray(stage_flops, np.float64)
  cumulative = np.cumsum(flops)
  reach = [(stops >= k).mean() for k in range(len(flops))]
  return {'expected_cost_pct': float(100.0 * cumulative[stops].mean() / reference_flops),
          'worst_cost_pct': float(100.0 * cumulative[-1] / reference_flops),
          'reach': [float(r) for r in reach]}


def sweep(stage_logits, labels, stage_flops, reference_flops, thresholds, rule='max_prob'):
  """Accuracy and cost of the adaptive chain for each threshold: a list of dicts."""
  rows = []
  labels = np.asarray(labels)
  for threshold in thresholds:
    preds, stops = adaptive_predictions(stage_logits, rule, float(threshold))
    rows.append({'threshold': float(threshold),
                 'accuracy': float((np.asarray(preds) == labels).mean()),
                 **expected_cost(stops, stage_flops, reference_flops)})
  return rows


class AdaptivePredictor:
  """Runs a chain sample-adaptively: stage k only on the samples still undecided.

  Args:
    stage_fns: [f_0, ..., f_K]: f_0(images) -> (logits f32[B, C], side f32[B, D] or None)
      runs the student; f_k(images, side) -> logits f32[B, C] a res-student (side: the
      student's output `side`, for res-students that read its features). Each is jitted
      here; a stage compiles once per padded batch size.
    rule, threshold: the stopping rule (see module docstring).
    fast_path_fraction: run stage k on the undecided samples only (gathered, padded to a
      power of two) when they are at most this fraction of the batch; else on the whole batch.
  """

  def __init__(self, stage_fns, rule: str = 'max_prob', threshold: float = 0.9, *,
               fast_path_fraction: float = 0.5):
    if rule not in RULES:
      raise ValueError(f'rule={rule!r} is not one of {RULES}')
    self.student = jax.jit(stage_fns[0])
    self.residuals = [jax.jit(f) for f in stage_fns[1:]]
    self.rule = rule
    self.threshold = float(threshold)
    self.fast_path_fraction = float(fast_path_fraction)
    self.samples_run = np.zeros(len(stage_fns), np.int64)  # per stage, over all calls

  def __call__(self, images: np.ndarray):
    """(predictions int32[B], stop stage int32[B]) for a batch of normalised images."""
    images = np.asarray(images)
    logits, side = self.student(images)
    logits = np.array(logits, np.float32)
    side = None if side is None else np.asarray(side)
    batch = len(images)
    stops = np.zeros(batch, np.int32)
    self.samples_run[0] += batch
    undecided = ~np.asarray(confident(logits, self.rule, self.threshold))
    for k, residual in enumerate(self.residuals, start=1):
      index = np.flatnonzero(undecided)
      if index.size == 0:
        break
      stops[index] = k
      if index.size <= self.fast_path_fraction * batch:
        size = min(batch, 1 << int(np.ceil(np.log2(index.size))))
        padded = np.concatenate([index, np.full(size - index.size, index[0])])
        sub_side = None if side is None else side[padded]
        r = np.asarray(residual(images[padded], sub_side))[:index.size]
        self.samples_run[k] += size
      else:
        r = np.asarray(residual(images, side))[index]
        self.samples_run[k] += batch
      logits[index] += r
      still = ~np.asarray(confident(logits[index], self.rule, self.threshold))
      undecided = np.zeros(batch, bool)
      undecided[index[still]] = True
    return np.argmax(logits, axis=-1).astype(np.int32), stops
