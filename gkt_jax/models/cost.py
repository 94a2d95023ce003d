"""FLOP accounting per residual block, for the cost of the subnets a step actually runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gkt_jax.models.resnet import Conv


def _counted_flops(model: nn.Module, input_shape, **apply_kwargs) -> list[tuple[tuple, float]]:
  """(module path, forward FLOPs per example) of every Conv and Dense call of one abstract
  (no compute) `model.apply(variables, x, **apply_kwargs)`, and of every module that counts
  its own (`flops_per_example(args, out)`); a module called twice is listed twice."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  calls = []

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__':
      return out
    if isinstance(module, Conv):
      k = module.kernel_size
      calls.append((module.scope.path,
                    2.0 * np.prod(out.shape[1:]) * k * k * args[0].shape[-1]))
    elif isinstance(module, nn.Dense):  # on every token of f[N, ..., C_in]
      calls.append((module.scope.path, 2.0 * np.prod(args[0].shape[1:]) * module.features))
    elif hasattr(module, 'flops_per_example'):  # e.g. a transformer's attention products
      calls.append((module.scope.path, float(module.flops_per_example(args, out))))
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda v, x: model.apply(v, x, **apply_kwargs), variables, x)
  return calls


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], **apply_kwargs) -> float:
  """Forward FLOPs (2 x multiply-adds) per example of the convolutions and dense layers that
  `model.apply(variables, x, **apply_kwargs)` runs, e.g. `classmates=True` for every path of a
  ClassmateResNet (shared layers count once per call)."""
  return float(sum(flops for _, flops in _counted_flops(model, input_shape, **apply_kwargs)))


def block_flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, np.ndarray]:
  """Forward FLOPs (2 x multiply-adds) of the convolutions and the head, per example.

  Counted from the shapes each `Conv` sees in an abstract (no compute) forward pass of the
  deployed network (for a ClassmateResNet: its main path).

  Args:
    model: a maskable network (blocks 'stage{s}_block{j}', droppable part 'branch').
    input_shape: (H, W, C) of one example.

  Returns:
    (fixed, per_block): fixed is the FLOPs outside residual branches (stem, projection
    shortcuts, head), which every subnet runs; per_block f64[L] those of each residual branch.
  """
  block_names = []
  for s, size in enumerate(model.stage_sizes):
    block_names += [f'stage{s + 1}_block{j + 1}' for j in range(size)]
  per_block = np.zeros(len(block_names))
  fixed = 0.0
  for path, flops in _counted_flops(model, input_shape):
    if 'branch' in path:
      per_block[block_names.index(path[path.index('branch') - 1])] += flops
    else:
      fixed += flops
  return fixed, per_block


def masks_flops(fixed: float, per_block: np.ndarray, masks_run: np.ndarray) -> float:
  """Forward FLOPs per example of running every row of masks_run bool[F, L] once."""
  masks_run = np.asarray(masks_run, dtype=np.float64)
  return float(masks_run.shape[0] * fixed + np.sum(masks_run @ per_block))


def xla_forward_flops(apply_fn, variables, input_shape: tuple[int, ...]) -> float:
  """FLOPs per example of `apply_fn(variables, x)` from XLA's cost analysis of its compiled
  (inference) program at batch 1: every op XLA counts (convolutions, with only the taps inside
  the padding, reductions, elementwise ops), not a hand-written table.

  Args:
    apply_fn: (variables, x f32[1, H, W, C]) -> outputs, e.g.
      `lambda v, x: model.apply(v, x, train=False)`.
    variables: the variables (or their ShapeDtypeStructs).
    input_shape: (H, W, C) of one example.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), variables)
  analysis = jax.jit(apply_fn).lower(variables, x).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0]
  if not analysis or 'flops' not in analysis:
    raise RuntimeError(f'XLA on {jax.default_backend()} gave no cost analysis (flops)')
  return float(analysis['flops'])
