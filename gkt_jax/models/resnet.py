"""ResNets whose residual blocks can be dropped by a traced keep mask.

`apply(variables, x, keep_mask=None, train=False, residual_scale=None)` returns
`(logits, features)`. `keep_mask` is bool[L] over the L residual blocks in network order; a
dropped block returns its shortcut and does no work: its residual branch sits in a
`jax.lax.cond` on a scalar predicate, so XLA branches on GPU/TPU, and its BatchNorm layers
neither normalise nor update their statistics. One compiled program serves every mask.
`residual_scale` (f32[L], or f32[N, L] per example) multiplies each residual branch: stochastic
depth's test-time rule, or its per-example train-time draw.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import numbers

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from gkt_jax.config import model as model_config
from gkt_jax.config import names
from gkt_jax.models.conv import IMPLS, conv2d, resolve_impl
from gkt_jax.utils import with_variance_of

SHORTCUTS = names.SHORTCUTS
PAD_DOWNSAMPLES = names.PAD_DOWNSAMPLES  # how a 'pad' shortcut's downsampling shrinks
_SAVE_POLICIES = {
    'conv_outputs': jax.checkpoint_policies.save_only_these_names('conv_out'),
    'nothing': jax.checkpoint_policies.nothing_saveable,
}
MASKED_SAVES = names.MASKED_SAVES
BLOCK_BARRIERS = names.BLOCK_BARRIERS  # False/True also by name ('none'/'barrier')
_BOUNDARIES = {False: 'none', True: 'barrier', 'cond': 'cond', 'none': 'none',
               'barrier': 'barrier'}
STEMS = names.STEMS
# The defaults of the fields a config sets (config.model, gkt_jax/config/model.py).
DEFAULTS = model_config.ResNetSettings()
BLOCKS = ('basic', 'bottleneck')

# As torchvision's ResNets: kaiming normal, fan_out, for a ReLU.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Conv(nn.Module):
  """Bias-free NHWC convolution using `conv2d` (see conv.py for `impl`)."""
  features: int
  kernel_size: int
  stride: int = 1
  impl: str = 'auto'
  dtype: jnp.dtype = jnp.float32
  # ((top, bottom), (left, right)); None: (k - 1) // 2 on every side, as PyTorch's ResNets.
  padding: tuple[tuple[int, int], tuple[int, int]] | None = None

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', _conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), stride=self.stride,
               padding=self.padding, impl=self.impl)
    return checkpoint_name(y, 'conv_out')


def _batch_norm(train: bool, momentum: float, name: str):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                      name=name)


class _Branch(nn.Module):
  """Fields shared by the residual branches."""
  features: int
  stride: int
  conv_impl: str
  bn_momentum: float
  dtype: jnp.dtype

  def conv(self, features, kernel_size, stride, name):
    return Conv(features, kernel_size, stride, impl=self.conv_impl, dtype=self.dtype, name=name)

  def bn(self, train, name):
    return _batch_norm(train, self.bn_momentum, name)


class BasicBranch(_Branch):
  """conv3x3-BN-ReLU-conv3x3-BN: the residual branch of a basic block."""

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(self.bn(train, 'bn1')(self.conv(self.features, 3, self.stride, 'conv1')(x)))
    return self.bn(train, 'bn2')(self.conv(self.features, 3, 1, 'conv2')(y))


class BottleneckBranch(_Branch):
  """1x1-3x3-1x1 bottleneck (stride on the 3x3, as torchvision); output 4x features."""

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(self.bn(train, 'bn1')(self.conv(self.features, 1, 1, 'conv1')(x)))
    y = nn.relu(self.bn(train, 'bn2')(self.conv(self.features, 3, self.stride, 'conv2')(y)))
    return self.bn(train, 'bn3')(self.conv(4 * self.features, 1, 1, 'conv3')(y))


def _zeros_with_variance_of(shape_dtype, like):
  """Zeros of `shape_dtype`, varying over the same mesh axes as `like` (a cond's branches
  must agree in device variance under shard_map)."""
  return with_variance_of(jnp.zeros(shape_dtype.shape, shape_dtype.dtype), like)


def _pad_shortcut(x, stride: int, out_features: int, downsample: str):
  """The parameter-free shortcut of a block that changes shape (x f[N, H, W, C]).

  'subsample' (option A of the CIFAR ResNet, as the common PyTorch code writes it): every
  stride-th pixel, zero channels split before and after the existing ones. 'avgpool' (the
  stochastic-depth authors' Torch code, ResidualDrop.lua): stride x stride average pooling,
  zero channels appended after the existing ones. An odd side is padded at its end, the padding
  left out of the average, so that the shortcut matches the branch's ceil(side / 2).
  """
  extra = out_features - x.shape[-1]
  if downsample == 'avgpool':
    if stride > 1:
      x = nn.avg_pool(x, (stride, stride), strides=(stride, stride), padding='SAME',
                      count_include_pad=False)
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
  x = x[:, ::stride, ::stride, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def masked_branch(block: nn.Module, branch: nn.Module, x, keep, train: bool,
                  out_shape: jax.ShapeDtypeStruct):
  """`branch(x, train)` inside `block`, or zeros of `out_shape` where the traced bool `keep`
  is False, without running the branch (one `lax.cond`); keep None: the branch runs."""
  if keep is None or block.is_initializing():
    return branch(x, train)
  return nn.cond(keep, lambda mdl, y: mdl(y, train),
                 lambda mdl, y: _zeros_with_variance_of(out_shape, y), branch, x)


def masked_block_output(block: nn.Module, branch: nn.Module, x, shortcut, keep, scale,
                        train: bool):
  """relu(shortcut + scale * branch(x)) inside `block`, or relu(shortcut) where the traced
  bool `keep` is False, without running the branch; keep None: the branch runs.

  The sum and the ReLU sit inside the `lax.cond`, so a dropped block neither writes a zero
  residual nor adds it, and its backward passes the gradient through the ReLU without
  writing a zero input gradient for the branch. An identity shortcut (`shortcut is x`)
  enters the cond once."""
  def combine(mdl, y, sc, scale):
    residual = mdl(y, train)
    if scale is not None:
      residual = residual * scale.astype(residual.dtype)
    return nn.relu(sc + residual)

  if keep is None or block.is_initializing():
    return combine(branch, x, shortcut, scale)
  if shortcut is x:
    return nn.cond(keep, lambda mdl, y, scale: combine(mdl, y, y, scale),
                   lambda mdl, y, scale: nn.relu(y), branch, x, scale)
  return nn.cond(keep, combine, lambda mdl, y, sc, scale: nn.relu(sc), branch, x, shortcut,
                 scale)


def check_block_inputs(num_blocks: int, keep_mask, residual_scale) -> None:
  """keep_mask holds one value per residual block; residual_scale, where given, one per block
  (f32[L]) or one per example and block (f32[N, L])."""
  if keep_mask is not None and tuple(keep_mask.shape) != (num_blocks,):
    raise ValueError(f'keep_mask has shape {tuple(keep_mask.shape)}; this network has '
                     f'{num_blocks} residual blocks, so it must be ({num_blocks},)')
  if residual_scale is not None and (residual_scale.ndim not in (1, 2)
                                     or residual_scale.shape[-1] != num_blocks):
    raise ValueError(f'residual_scale has shape {tuple(residual_scale.shape)}; this network '
                     f'has {num_blocks} residual blocks, so it must be ({num_blocks},) or '
                     f'(N, {num_blocks})')


def block_scale(residual_scale, index: int, rank: int):
  """Block `index`'s factor of `residual_scale` (f32[L] or f32[N, L], or None), shaped to
  multiply a residual of `rank` dimensions: a scalar, or f32[N, 1, ...]."""
  if residual_scale is None:
    return None
  if residual_scale.ndim == 1:
    return residual_scale[index]
  return residual_scale[:, index].reshape((-1,) + (1,) * (rank - 1))


class ResidualBlock(nn.Module):
  """out = relu(shortcut(x) + scale * branch(x)); the branch is skipped when keep is False."""
  features: int
  stride: int
  block: str
  shortcut: str
  conv_impl: str
  bn_momentum: float
  dtype: jnp.dtype
  boundary: str = 'none'  # of an unmasked call: 'none', 'barrier' or 'cond' (ResNet)
  masked_saves: str = DEFAULTS.masked_saves
  pad_downsample: str = DEFAULTS.pad_downsample

  @nn.compact
  def __call__(self, x, keep, scale, train: bool):
    if keep is None and self.boundary == 'cond':
      # A true predicate XLA cannot fold: the block becomes its own computation, as in a
      # masked forward (see ResNet.block_barriers).
      keep = jax.lax.optimization_barrier(jnp.array(True))
    out_features = self.features * (4 if self.block == 'bottleneck' else 1)
    # The shortcut always runs: a dropped block outputs it.
    if self.stride == 1 and x.shape[-1] == out_features:
      shortcut = x
    elif self.shortcut == 'pad':
      shortcut = _pad_shortcut(x, self.stride, out_features, self.pad_downsample)
    else:
      shortcut = Conv(out_features, 1, self.stride, impl=self.conv_impl, dtype=self.dtype,
                      name='proj_conv')(x)
      shortcut = _batch_norm(train, self.bn_momentum, 'proj_bn')(shortcut)

    branch_cls = BottleneckBranch if self.block == 'bottleneck' else BasicBranch
    if keep is not None and self.masked_saves != 'all':
      # What the backward of a cond needs from its forward is an output of both branches:
      # a dropped block writes zeros for every activation the kept branch saves. Saving
      # only the conv outputs (BN and ReLU are recomputed) makes dropped blocks cheap.
      branch_cls = nn.remat(branch_cls, static_argnums=(2,),
                            policy=_SAVE_POLICIES[self.masked_saves])
    branch = branch_cls(self.features, self.stride, self.conv_impl, self.bn_momentum, self.dtype,
                        name='branch')
    if self.boundary == 'barrier' and (keep is None or self.is_initializing()):
      x = jax.lax.optimization_barrier(x)
    return masked_block_output(self, branch, x, shortcut, keep, scale, train)


class ResNet(nn.Module):
  """A ResNet with maskable residual blocks.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 3, 3) for the CIFAR ResNet-20.
    stage_widths: branch width of each stage (bottleneck blocks output 4x this).
    num_classes: classifier outputs.
    block: 'basic' or 'bottleneck'.
    stem: 'cifar' (3x3 conv, stride 1) or 'imagenet' (7x7 stride-2 conv and 3x3 max pool).
    stem_width: stem output channels.
    shortcut: 'projection' (1x1 conv + BN) or 'pad' (parameter-free: stride subsampling and zero
      channels, option A of the CIFAR ResNet).
    pad_downsample: how a 'pad' shortcut shrinks its input: 'subsample' (every stride-th
      pixel, zero channels on both sides) or 'avgpool' (2x2 average pooling, zero channels
      after: the stochastic-depth authors' Torch code). Ignored with 'projection'.
    conv_impl: 'auto', 'xla' or 'canonical' (see conv.py).
    bn_momentum: running-statistics momentum (PyTorch's 0.1 is Flax's 0.9).
    dtype: computation dtype (parameters stay float32).
    block_barriers: what separates the blocks of an unmasked forward for XLA: False (nothing:
      one flat program), True (a `lax.optimization_barrier` on each block input) or 'cond'
      (each block in a `lax.cond` on a true predicate XLA cannot fold, so that it compiles
      and runs as in a masked forward: its own computation, the canonical convolution and
      `masked_saves`); 'auto': 'cond' on CPU, False elsewhere; 'none' and 'barrier' name
      False and True (a config field keeps one type). None changes a value beyond
      float rounding. 'cond' is the fastest on CPU (docs/usage.md, "How dropped blocks are
      made cheap"; `python -m experiments.probes.block_boundaries`).
    masked_saves: what a masked block's forward keeps for its backward: 'conv_outputs'
      (BN/ReLU recomputed), 'nothing' (whole branch recomputed) or 'all'. All give the same
      values. Every saved activation is written as zeros by a dropped block (a cond's
      branches share outputs), so 'conv_outputs' is the cheapest (docs/usage.md).
  """
  stage_sizes: Sequence[int]
  stage_widths: Sequence[int]
  num_classes: int
  block: str = 'basic'
  stem: str = 'cifar'
  stem_width: int = 16
  shortcut: str = 'projection'
  conv_impl: str = DEFAULTS.conv_impl
  bn_momentum: float = DEFAULTS.bn_momentum
  dtype: jnp.dtype = jnp.float32
  block_barriers: bool | str = DEFAULTS.block_barriers  # BLOCK_BARRIERS
  masked_saves: str = DEFAULTS.masked_saves
  pad_downsample: str = DEFAULTS.pad_downsample

  def __post_init__(self):
    """The fields are checked where they are given (not at the first call)."""
    super().__post_init__()
    choices = {'block': BLOCKS, 'stem': STEMS, 'shortcut': SHORTCUTS, 'conv_impl': IMPLS,
               'block_barriers': BLOCK_BARRIERS, 'masked_saves': MASKED_SAVES,
               'pad_downsample': PAD_DOWNSAMPLES}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f'{name}={getattr(self, name)!r} is not one of {allowed}')
    counts = {'stage_sizes': tuple(self.stage_sizes), 'stage_widths': tuple(self.stage_widths),
              'num_classes': (self.num_classes,), 'stem_width': (self.stem_width,)}
    for name, values in counts.items():
      if not values or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                               and v >= 1 for v in values):
        what = 'an integer' if name in ('num_classes', 'stem_width') else 'integers'
        raise ValueError(f'{name}={getattr(self, name)!r}: must be {what} >= 1')
    if len(self.stage_widths) != len(self.stage_sizes):
      raise ValueError(f'stage_widths={tuple(self.stage_widths)} needs one width per stage '
                       f'of stage_sizes={tuple(self.stage_sizes)}')
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f'bn_momentum={self.bn_momentum!r}: must be in [0, 1) (Flax convention: '
                       "PyTorch's momentum 0.1 is 0.9 here)")

  @property
  def num_blocks(self) -> int:
    return int(sum(self.stage_sizes))

  def _checked_settings(self, keep_mask, residual_scale):
    """Validates the inputs; returns (conv impl, the blocks' boundary: 'none', 'barrier' or
    'cond')."""
    check_block_inputs(self.num_blocks, keep_mask, residual_scale)
    mode = self.block_barriers
    if mode == 'auto':
      mode = 'cond' if jax.default_backend() == 'cpu' else False
    boundary = _BOUNDARIES[mode]
    masked = keep_mask is not None or boundary == 'cond'
    return resolve_impl(self.conv_impl, masked=masked), boundary

  def _stage_blocks(self, s: int, impl: str, boundary: str, prefix: str = ''):
    """The residual blocks of stage s (0-based), named f'{prefix}stage{s+1}_block{j+1}'."""
    return [ResidualBlock(self.stage_widths[s], 2 if (s > 0 and j == 0) else 1, self.block,
                          self.shortcut, impl, self.bn_momentum, self.dtype,
                          boundary=boundary, masked_saves=self.masked_saves,
                          pad_downsample=self.pad_downsample,
                          name=f'{prefix}stage{s + 1}_block{j + 1}')
            for j in range(self.stage_sizes[s])]

  def _trunk(self, x, keep_mask, train, residual_scale):
    """Stem and stages; returns the last feature map, the features dict and the settings."""
    impl, boundary = self._checked_settings(keep_mask, residual_scale)
    features = {}
    x = x.astype(self.dtype)
    if self.stem == 'cifar':
      x = Conv(self.stem_width, 3, 1, impl=impl, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(_batch_norm(train, self.bn_momentum, 'stem_bn')(x))
    else:
      x = Conv(self.stem_width, 7, 2, impl=impl, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(_batch_norm(train, self.bn_momentum, 'stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features['stem'] = x
    index = 0
    for s in range(len(self.stage_sizes)):
      for block in self._stage_blocks(s, impl, boundary):
        keep = None if keep_mask is None else keep_mask[index]
        scale = block_scale(residual_scale, index, 4)
        x = block(x, keep, scale, train)
        index += 1
      features[f'stage{s + 1}'] = x
    return x, features, (impl, boundary)

  @staticmethod
  def _pool_and_head(x, num_classes: int, name: str):
    """Global average pool and a linear head: (pre_logits, logits in at least float32; a
    float64 network's stay float64)."""
    pooled = jnp.mean(x, axis=(1, 2))
    return pooled, nn.Dense(num_classes, name=name)(
        pooled.astype(jnp.promote_types(pooled.dtype, jnp.float32)))

  @nn.compact
  def __call__(self, x, keep_mask=None, train: bool = False, residual_scale=None):
    """Args: x f[N, H, W, C]; keep_mask bool[L] or None (all blocks); residual_scale f32[L]
    or f32[N, L].

    Returns:
      logits f32[N, num_classes] and a dict of features: 'stem', 'stage1'.., 'pre_logits'.
    """
    x, features, _ = self._trunk(x, keep_mask, train, residual_scale)
    features['pre_logits'], logits = self._pool_and_head(x, self.num_classes, 'head')
    return logits, features


def resnet_fields(model: ResNet) -> dict:
  """The ResNet dataclass fields of `model`: build a subclass around the same network."""
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(ResNet)
          if f.init and f.name not in ('parent', 'name')}


class SideInputResNet(ResNet):
  """A ResNet whose head reads its pooled features concatenated with `side_features`.

  `apply(variables, x, ..., side_features=f32[N, side_features_dim])`; the side features are
  an input, not trained through (`stop_gradient`). At `init` they may be omitted (zeros).
  """
  side_features_dim: int = 0

  @nn.compact
  def __call__(self, x, keep_mask=None, train: bool = False, residual_scale=None,
               side_features=None):
    x, features, _ = self._trunk(x, keep_mask, train, residual_scale)
    pooled = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    if self.side_features_dim:
      if side_features is None:
        if not self.is_initializing():
          raise ValueError(f'this network needs side_features f32[N, {self.side_features_dim}]')
        side_features = jnp.zeros((x.shape[0], self.side_features_dim), jnp.float32)
      if side_features.shape[-1] != self.side_features_dim:
        raise ValueError(f'side_features has shape {side_features.shape}; expected '
                         f'[N, {self.side_features_dim}]')
      pooled = jnp.concatenate(
          [pooled, jax.lax.stop_gradient(side_features).astype(jnp.float32)], axis=-1)
    features['pre_logits'] = pooled
    return nn.Dense(self.num_classes, name='head')(pooled), features
