"""Vision transformers whose blocks can be dropped by a traced keep mask.

`ViT(...).apply(variables, x, keep_mask=None, train=False, residual_scale=None)` returns
`(logits, features)`, as the ResNets do. The network is one stage of `depth` pre-norm
transformer blocks, x + branch(x) with branch(x) = a + MLP(LN(x + a)), a = MHSA(LN(x)); a
dropped block returns x and does no work (`resnet.masked_branch`). A masked block's branch
saves only the outputs of its dense layers (qkv, proj, mlp1, mlp2) for the backward; layer
norms, GELU and the attention (scores and probabilities) are recomputed, as ResNet blocks
save only their convolution outputs, so that a dropped block writes zeros for those alone.
The subnet samplers keep every stage's first block, so the first block is the one GKT and
stimulative training never drop (stochastic depth may, at its survival probability).

Patch embedding (a strided convolution, `stem_conv`) with `patch_size` 4 for inputs of side
>= 32 and 2 for smaller ones (28x28 Fashion-MNIST: 14x14 tokens), learned position
embeddings, global average pooling of the final LayerNorm's tokens, a linear head.
ViT-Ti: width 192, 3 heads; ViT-S: width 384, 6 heads; 12 blocks, MLP ratio 4.
No BatchNorm: `batch_stats` is empty and recalibration changes nothing.

The patch side and the position grid are fixed at `init` by its input. An input of another
size (ST++'s `subnet_resize`) keeps them: it is zero-padded at its bottom and right to whole
patches and the position embeddings are bilinearly resized to its grid (a 32x32 network
with 4x4 patches takes 26x26 images as 7x7 tokens). The embeddings of a non-square grid take
only inputs of their own size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from gkt_jax.config import model as model_config
from gkt_jax.models.conv import IMPLS, resolve_impl
from gkt_jax.models.resnet import Conv, block_scale, check_block_inputs, masked_branch

# name: (width, heads); every size has 12 blocks and MLP ratio 4 unless the config says.
SIZES = {'ti': (192, 3), 's': (384, 6)}
# The defaults of the fields a config sets (config.model, gkt_jax/config/model.py).
DEFAULTS = model_config.ViTSettings()

_dense_init = nn.initializers.truncated_normal(0.02)
# What a masked branch saves for its backward: the outputs of its dense layers (named
# 'dense_out'), as ResNet blocks save their convolution outputs.
SAVE_DENSE_OUTPUTS = jax.checkpoint_policies.save_only_these_names('dense_out')


class Attention(nn.Module):
  """softmax(q k^T / sqrt(d)) v over the tokens, per head (q, k, v f[N, T, H, d])."""

  @nn.compact
  def __call__(self, q, k, v):
    scores = jnp.einsum('nqhd,nkhd->nhqk', q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
    weights = nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum('nhqk,nkhd->nqhd', weights, v)

  @staticmethod
  def flops_per_example(args, out) -> float:
    """The two token-by-token products (models/cost.py counts Conv and Dense itself)."""
    q = args[0]
    tokens, heads, dim = q.shape[1:]
    return 2.0 * 2.0 * tokens * tokens * heads * dim


class TransformerBranch(nn.Module):
  """a = MHSA(LN(x)); returns a + MLP(LN(x + a)) (the block adds x)."""
  width: int
  heads: int
  mlp_ratio: int
  dtype: jnp.dtype

  def dense(self, features, name):
    """A dense layer whose output is named 'dense_out' (SAVE_DENSE_OUTPUTS)."""
    dense = nn.Dense(features, kernel_init=_dense_init, dtype=self.dtype, name=name)
    return lambda x: checkpoint_name(dense(x), 'dense_out')

  @nn.compact
  def __call__(self, x, train: bool):
    del train  # no BatchNorm, no dropout
    tokens = x.shape[1]
    head_dim = self.width // self.heads
    qkv = self.dense(3 * self.width, 'qkv')(nn.LayerNorm(dtype=self.dtype, name='ln1')(x))
    q, k, v = jnp.split(qkv.reshape(x.shape[0], tokens, 3 * self.heads, head_dim), 3, axis=2)
    a = Attention(name='attention')(q, k, v).reshape(x.shape[0], tokens, self.width)
    a = self.dense(self.width, 'proj')(a)
    y = nn.LayerNorm(dtype=self.dtype, name='ln2')(x + a)
    y = self.dense(self.width, 'mlp2')(nn.gelu(self.dense(self.mlp_ratio * self.width,
                                                           'mlp1')(y)))
    return a + y


class TransformerBlock(nn.Module):
  """x + scale * branch(x); the branch is skipped when keep is False."""
  width: int
  heads: int
  mlp_ratio: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, keep, scale, train: bool):
    branch_cls = TransformerBranch
    if keep is not None:
      # The backward of a cond reads what the kept branch saves, and a dropped branch writes
      # zeros for all of it: save the dense outputs alone.
      branch_cls = nn.remat(branch_cls, static_argnums=(2,), policy=SAVE_DENSE_OUTPUTS)
    branch = branch_cls(self.width, self.heads, self.mlp_ratio, self.dtype, name='branch')
    residual = masked_branch(self, branch, x, keep, train, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if scale is not None:
      residual = residual * scale.astype(residual.dtype)
    return x + residual


class ViT(nn.Module):
  """A vision transformer with maskable blocks (module docstring).

  Attributes:
    num_classes: classifier outputs.
    width: token width (ViT-Ti 192, ViT-S 384).
    depth: transformer blocks (12).
    heads: attention heads (width must be a multiple).
    mlp_ratio: MLP hidden width / width (4).
    patch_size: patch side; None: 4 for init inputs of side >= 32, else 2 (later inputs of
      other sizes use the init's patch).
    conv_impl: the patch embedding's convolution ('auto', 'xla', 'canonical').
    dtype: computation dtype (parameters stay float32).
  """
  num_classes: int
  width: int = 192
  depth: int = DEFAULTS.depth
  heads: int = 3
  mlp_ratio: int = DEFAULTS.mlp_ratio
  patch_size: int | None = None
  conv_impl: str = DEFAULTS.conv_impl
  dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    for name in ('num_classes', 'width', 'depth', 'heads', 'mlp_ratio'):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f'model.{name}={value!r}: must be an integer >= 1')
    if self.width % self.heads:
      raise ValueError(f'model.width={self.width} must be a multiple of model.heads='
                       f'{self.heads}')
    if self.patch_size is not None and (not isinstance(self.patch_size, (int, np.integer))
                                        or self.patch_size < 1):
      raise ValueError(f'model.patch_size={self.patch_size!r}: must be an integer >= 1 or '
                       'None (4 for init inputs of side >= 32, else 2)')
    if self.conv_impl not in IMPLS:
      raise ValueError(f'model.conv_impl={self.conv_impl!r} is not one of {IMPLS}')

  @property
  def stage_sizes(self) -> tuple[int, ...]:
    return (self.depth,)

  @property
  def num_blocks(self) -> int:
    return self.depth

  def patch_side(self, image_side: int) -> int:
    """The patch side of a network initialised on inputs of side `image_side`."""
    if self.patch_size is not None:
      return self.patch_size
    return 4 if image_side >= 32 else 2

  def _patch_and_grid(self, image_shape) -> tuple[int, tuple[int, int]]:
    """(patch side, (rows, cols) of the position embeddings): at init from the input's side
    (`patch_side`), afterwards from the parameters (the stem kernel, the embeddings)."""
    params = {} if self.is_initializing() else self.variables.get('params', {})
    if 'position' not in params:
      patch = self.patch_side(image_shape[0])
      if image_shape[0] % patch or image_shape[1] % patch:
        raise ValueError(f'input of {image_shape[0]}x{image_shape[1]} pixels does not split '
                         f'into {patch}x{patch} patches (model.patch_size)')
      return patch, (image_shape[0] // patch, image_shape[1] // patch)
    patch = int(np.shape(params['stem_conv']['kernel'])[0])
    tokens = int(np.shape(params['position'])[1])
    rows, cols = -(-image_shape[0] // patch), -(-image_shape[1] // patch)
    if rows * cols != tokens:
      rows = cols = math.isqrt(tokens)
      if rows * cols != tokens:
        raise ValueError(f'input of {image_shape[0]}x{image_shape[1]} pixels: the position '
                         f'embeddings of {tokens} tokens are not a square grid, so they take '
                         'only inputs of their own size')
    return patch, (rows, cols)

  @nn.compact
  def __call__(self, x, keep_mask=None, train: bool = False, residual_scale=None):
    """Args: x f[N, H, W, C]; keep_mask bool[depth] or None; residual_scale f32[depth] or
    f32[N, depth].

    Returns:
      logits f32[N, num_classes] and a dict of features: 'stem' (the embedded tokens
      f[N, T, width]), 'stage1' (the last block's tokens), 'pre_logits'.
    """
    check_block_inputs(self.num_blocks, keep_mask, residual_scale)
    patch, grid = self._patch_and_grid(x.shape[1:3])
    # Another size than init's (ST++'s resized subnets): zero-pad to whole patches.
    rows, cols = -(-x.shape[1] // patch), -(-x.shape[2] // patch)
    x = jnp.pad(x, ((0, 0), (0, rows * patch - x.shape[1]), (0, cols * patch - x.shape[2]),
                    (0, 0)))
    impl = resolve_impl(self.conv_impl, masked=keep_mask is not None)
    x = Conv(self.width, patch, patch, impl=impl, dtype=self.dtype, padding=((0, 0), (0, 0)),
             name='stem_conv')(x.astype(self.dtype))
    x = x.reshape(x.shape[0], -1, self.width)
    position = self.param('position', _dense_init, (1, grid[0] * grid[1], self.width),
                          jnp.float32)
    if (rows, cols) != grid:
      position = jax.image.resize(position.reshape(grid + (self.width,)),
                                  (rows, cols, self.width), 'bilinear', antialias=False)
    x = x + position.reshape(1, rows * cols, self.width).astype(self.dtype)
    features = {'stem': x}
    for i in range(self.depth):
      keep = None if keep_mask is None else keep_mask[i]
      scale = block_scale(residual_scale, i, 3)
      x = TransformerBlock(self.width, self.heads, self.mlp_ratio, self.dtype,
                           name=f'stage1_block{i + 1}')(x, keep, scale, train)
    features['stage1'] = x
    pooled = jnp.mean(nn.LayerNorm(dtype=self.dtype, name='final_ln')(x), axis=1)
    features['pre_logits'] = pooled
    logits = nn.Dense(self.num_classes, name='head')(pooled.astype(jnp.float32))
    return logits, features


def build_vit(size: str, num_classes: int, **fields) -> ViT:
  """ViT-Ti ('ti') or ViT-S ('s') with `fields` over its defaults (depth, heads, ...)."""
  width, heads = SIZES[size]
  return ViT(num_classes=num_classes, **dict(dict(width=width, heads=heads), **fields))
