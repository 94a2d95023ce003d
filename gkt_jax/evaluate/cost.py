"""FLOP accounting per residual block, for the cost of the subnets a step actually runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gkt_jax.models.resnet import Conv, ResNet


def block_flops(model: ResNet, input_shape: tuple[int, ...]) -> tuple[float, np.ndarray]:
  """Forward FLOPs (2 x multiply-adds) of the convolutions and the head, per example.

  Counted from the shapes each `Conv` sees in an abstract (no compute) forward pass.

  Args:
    model: a ResNet.
    input_shape: (H, W, C) of one example.

  Returns:
    (fixed, per_block): fixed is the FLOPs outside residual branches (stem, projection
    shortcuts, head), which every subnet runs; per_block f64[L] those of each residual branch.
  """
  block_names = []
  for s, size in enumerate(model.stage_sizes):
    block_names += [f'stage{s + 1}_block{j + 1}' for j in range(size)]
  per_block = np.zeros(len(block_names))
  fixed = [0.0]

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, Conv) and context.method_name == '__call__':
      k = module.kernel_size
      flops = 2.0 * np.prod(out.shape[1:]) * k * k * args[0].shape[-1]
      path = module.scope.path
      if 'branch' in path:
        per_block[block_names.index(path[path.index('branch') - 1])] += flops
      else:
        fixed[0] += flops
    elif isinstance(module, nn.Dense) and context.method_name == '__call__':
      fixed[0] += 2.0 * args[0].shape[-1] * module.features
    return out

  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  with nn.intercept_methods(count):
    jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
  return fixed[0], per_block


def masks_flops(fixed: float, per_block: np.ndarray, masks_run: np.ndarray) -> float:
  """Forward FLOPs per example of running every row of masks_run bool[F, L] once."""
  masks_run = np.asarray(masks_run, dtype=np.float64)
  return float(masks_run.shape[0] * fixed + np.sum(masks_run @ per_block))
