"""Wide ResNets (Zagoruyko & Komodakis, 2016) whose blocks can be dropped by a traced mask.

WRN-d-k: a 3x3 stem of 16 channels, three stages of n = (d - 4) / 6 pre-activation blocks of
16k, 32k and 64k channels (the second and third start with stride 2), then BN-ReLU, global
average pooling and a linear head. A block is shortcut(x) + branch(x); the branch is
[BN-ReLU-]conv3x3-BN-ReLU-[dropout-]conv3x3 (dropout at `dropout_rate`, default 0: the
paper reports WRNs with and without it; WRN-28-10's reference numbers use 0.3). A block that
changes shape (stride 2 or a new width) has a 1x1 projection shortcut reading the
pre-activated input relu(bn(x)), which the branch's first convolution reads too: that
pre-activation belongs to the shortcut and runs when the block is dropped. Elsewhere the
shortcut is x and the branch begins with its own BN-ReLU.

A dropped block returns its shortcut and does no work (`resnet.masked_branch`); a masked
block's branch saves only its convolution outputs for the backward (BN, ReLU and dropout are
recomputed), as the ResNets' blocks do, so that a dropped block writes zeros for those alone.
`apply` is the ResNets': (variables, x, keep_mask=None, train=False, residual_scale=None)
-> (logits, features); with dropout, a train-mode call needs `rngs={'dropout': key}`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gkt_jax.config import model as model_config
from gkt_jax.models.conv import IMPLS, resolve_impl
from gkt_jax.models.resnet import Conv, block_scale, check_block_inputs, masked_branch

DEPTHS = (16, 22, 28, 40)
# The defaults of the fields a config sets (config.model, gkt_jax/config/model.py).
DEFAULTS = model_config.WideResNetSettings()
# What a masked branch saves for its backward: the outputs of its convolutions (the
# `resnet.Conv` outputs are named 'conv_out'), as ResNet blocks' default masked_saves.
SAVE_CONV_OUTPUTS = jax.checkpoint_policies.save_only_these_names('conv_out')


def _bn(train: bool, momentum: float, name: str):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                      name=name)


class WideBranch(nn.Module):
  """The residual branch; `preact`: it begins with BN-ReLU (blocks with an identity
  shortcut; the others receive the pre-activated input)."""
  features: int
  stride: int
  preact: bool
  conv_impl: str
  bn_momentum: float
  dtype: jnp.dtype
  dropout_rate: float = DEFAULTS.dropout_rate

  @nn.compact
  def __call__(self, x, train: bool):
    if self.preact:
      x = nn.relu(_bn(train, self.bn_momentum, 'bn1')(x))
    y = Conv(self.features, 3, self.stride, impl=self.conv_impl, dtype=self.dtype,
             name='conv1')(x)
    y = nn.relu(_bn(train, self.bn_momentum, 'bn2')(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(y)
    return Conv(self.features, 3, 1, impl=self.conv_impl, dtype=self.dtype, name='conv2')(y)


class WideBlock(nn.Module):
  """shortcut(x) + scale * branch(x); the branch is skipped when keep is False."""
  features: int
  stride: int
  conv_impl: str
  bn_momentum: float
  dtype: jnp.dtype
  dropout_rate: float = DEFAULTS.dropout_rate

  @nn.compact
  def __call__(self, x, keep, scale, train: bool):
    identity = self.stride == 1 and x.shape[-1] == self.features
    if identity:
      shortcut = x
    else:  # the pre-activation is shared with the branch, and runs when it is dropped
      x = nn.relu(_bn(train, self.bn_momentum, 'preact_bn')(x))
      shortcut = Conv(self.features, 1, self.stride, impl=self.conv_impl, dtype=self.dtype,
                      name='proj_conv')(x)
    branch_cls = WideBranch
    if keep is not None:
      # The backward of a cond reads what the kept branch saves, and a dropped branch writes
      # zeros for all of it: save the convolution outputs alone.
      branch_cls = nn.remat(branch_cls, static_argnums=(2,), policy=SAVE_CONV_OUTPUTS)
    branch = branch_cls(self.features, self.stride, identity, self.conv_impl,
                        self.bn_momentum, self.dtype, self.dropout_rate, name='branch')
    residual = masked_branch(self, branch, x, keep, train, jax.eval_shape(lambda: shortcut))
    if scale is not None:
      residual = residual * scale.astype(residual.dtype)
    return shortcut + residual


class WideResNet(nn.Module):
  """WRN-depth-widen_factor with maskable blocks (module docstring).

  Attributes:
    depth: 6n + 4 (16, 22, 28, 40, ...).
    widen_factor: k; stage widths 16k, 32k, 64k.
    num_classes: classifier outputs.
    conv_impl: 'auto', 'xla' or 'canonical' (see conv.py).
    bn_momentum: running-statistics momentum (Flax convention; PyTorch's 0.1 is 0.9).
    dtype: computation dtype (parameters stay float32).
    dropout_rate: dropout between the two convolutions of every branch, in train mode only
      (then `apply` needs `rngs={'dropout': key}`); 0 (default) draws nothing.
  """
  depth: int
  widen_factor: int
  num_classes: int
  conv_impl: str = DEFAULTS.conv_impl
  bn_momentum: float = DEFAULTS.bn_momentum
  dtype: jnp.dtype = jnp.float32
  dropout_rate: float = DEFAULTS.dropout_rate

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.depth, (int, np.integer)) or self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'model.depth={self.depth!r}: a Wide ResNet has depth 6n + 4, n >= 1 '
                       f'(e.g. {DEPTHS})')
    for name in ('widen_factor', 'num_classes'):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f'model.{name}={value!r}: must be an integer >= 1')
    if self.conv_impl not in IMPLS:
      raise ValueError(f'model.conv_impl={self.conv_impl!r} is not one of {IMPLS}')
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f'model.bn_momentum={self.bn_momentum!r}: must be in [0, 1)')
    if (not isinstance(self.dropout_rate, (int, float, np.floating))
        or isinstance(self.dropout_rate, bool) or not 0.0 <= self.dropout_rate < 1.0):
      raise ValueError(f'model.dropout_rate={self.dropout_rate!r}: must be a number in [0, 1)')

  @property
  def stage_sizes(self) -> tuple[int, ...]:
    n = (self.depth - 4) // 6
    return (n, n, n)

  @property
  def stage_widths(self) -> tuple[int, ...]:
    return tuple(w * self.widen_factor for w in (16, 32, 64))

  @property
  def num_blocks(self) -> int:
    return int(sum(self.stage_sizes))

  @nn.compact
  def __call__(self, x, keep_mask=None, train: bool = False, residual_scale=None):
    """Args: x f[N, H, W, C]; keep_mask bool[L] or None (all blocks); residual_scale f32[L]
    or f32[N, L].

    Returns:
      logits f32[N, num_classes] and a dict of features: 'stem', 'stage1'.., 'pre_logits'.
    """
    check_block_inputs(self.num_blocks, keep_mask, residual_scale)
    if (train and self.dropout_rate > 0 and not self.is_initializing()
        and not self.has_rng('dropout')):
      raise ValueError(f'model.dropout_rate={self.dropout_rate}: a train-mode apply needs a '
                       "dropout key, apply(..., rngs={'dropout': key})")
    impl = resolve_impl(self.conv_impl, masked=keep_mask is not None)
    x = Conv(16, 3, 1, impl=impl, dtype=self.dtype, name='stem_conv')(x.astype(self.dtype))
    features = {'stem': x}
    index = 0
    for s, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      for j in range(size):
        keep = None if keep_mask is None else keep_mask[index]
        scale = block_scale(residual_scale, index, 4)
        x = WideBlock(width, 2 if (s > 0 and j == 0) else 1, impl, self.bn_momentum,
                      self.dtype, self.dropout_rate,
                      name=f'stage{s + 1}_block{j + 1}')(x, keep, scale, train)
        index += 1
      features[f'stage{s + 1}'] = x
    x = nn.relu(_bn(train, self.bn_momentum, 'final_bn')(x))
    pooled = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = pooled
    return nn.Dense(self.num_classes, name='head')(pooled.astype(jnp.float32)), features
