"""A ResNet with one weight-sharing classmate branch (EKD-FWSNet, docs/methods/ekd_fwsnet.md).

The trunk is the plain ResNet, with its parameter names: `stem_*`, `stage{s}_block{j}`,
`head`. The branch holds one auxiliary copy of every stage after the first,
`aux_stage{s}_block{j}` (s = 2..S), with its own weights, and one head per classmate path,
`head_cm{b}`. Classmate path b (b = 1..S-1) takes the trunk's stage-b output through
dropout, runs aux stages b+1..S and its head: the aux stages are shared by every path that
passes through them (their running BatchNorm statistics are updated once per pass, in path
order, as the authors' PyTorch forward does), and the trunk's stage outputs feed every path
after them, so classmate losses train the trunk too.

  3 stages (CIFAR ResNet-20..110): main, cm1 = aux2 -> aux3, cm2 = aux3     (6 stage runs)
  4 stages (ResNet-18/34/50):      main, cm1 = aux2-4, cm2 = aux3-4, cm3 = aux4

`apply(variables, x, keep_mask=None, train=False, residual_scale=None, classmates=False)`
returns `(logits, features)` of the main path, exactly the plain ResNet's (keep_mask and
residual_scale act on the trunk only). With `classmates=True` the features also hold
'path_logits' f32[P, N, C] and 'path_features' f[P, N, h, w, c] (each path's final feature
map), main path first. In training mode dropout needs `rngs={'dropout': key}`.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from gkt_jax.models.resnet import ResNet, resnet_fields

AUX_PREFIX = 'aux_'
HEAD_PREFIX = 'head_cm'


class ClassmateResNet(ResNet):
  """A ResNet (see resnet.ResNet for its fields) with a classmate branch.

  Attributes:
    dropout_rate: dropout on the trunk feature map at each branch point (the spec: 0.2 for
      3-stage nets, 0.1 for 4-stage ones).
  """
  dropout_rate: float = 0.2

  @property
  def num_paths(self) -> int:
    return len(self.stage_sizes)

  @property
  def path_names(self) -> tuple[str, ...]:
    return ('main',) + tuple(f'cm{b}' for b in range(1, self.num_paths))

  @nn.compact
  def __call__(self, x, keep_mask=None, train: bool = False, residual_scale=None,
               classmates: bool = False):
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'dropout_rate={self.dropout_rate!r} is outside [0, 1)')
    x, features, (impl, boundary) = self._trunk(x, keep_mask, train, residual_scale)
    features['pre_logits'], logits = self._pool_and_head(x, self.num_classes, 'head')
    if not (classmates or self.is_initializing()):
      return logits, features
    num_stages = len(self.stage_sizes)
    # Built once, called by every path through them: the weight sharing.
    aux_stages = {s: self._stage_blocks(s, impl, boundary, prefix=AUX_PREFIX)
                  for s in range(1, num_stages)}
    path_logits, path_features = [logits], [x]
    for b in range(1, num_stages):
      h = nn.Dropout(self.dropout_rate, deterministic=not train, name=f'drop_cm{b}')(
          features[f'stage{b}'])
      for s in range(b, num_stages):
        for block in aux_stages[s]:
          h = block(h, None, None, train)
      path_features.append(h)
      path_logits.append(self._pool_and_head(h, self.num_classes, f'{HEAD_PREFIX}{b}')[1])
    features['path_logits'] = jnp.stack(path_logits)
    features['path_features'] = jnp.stack(path_features)
    return logits, features


def with_classmates(model: ResNet, dropout_rate: float) -> ClassmateResNet:
  """The ClassmateResNet whose trunk is `model` (same fields, same trunk parameter names).

  It applies dropout at every branch point (`dropout_rate`), so a train-mode call needs a
  dropout key: `apply(variables, x, train=True, rngs={'dropout': key},
  mutable=['batch_stats'])`.
  """
  return ClassmateResNet(**resnet_fields(model), dropout_rate=dropout_rate)


def is_branch_key(name: str) -> bool:
  """True for the top-level variable names of the classmate branch (aux stages, heads)."""
  return name.startswith(AUX_PREFIX) or name.startswith(HEAD_PREFIX)


def main_path(tree: dict) -> dict:
  """The trunk's part of a params or batch_stats dict: a plain ResNet's variables."""
  return {k: v for k, v in tree.items() if not is_branch_key(k)}


def fill_branch_from_trunk(loaded: dict, like: dict) -> tuple[dict, list[str]]:
  """`loaded` (a params or batch_stats dict, maybe of a plain ResNet) completed to `like`'s keys.

  A missing aux stage block `aux_stage{s}_block{j}` is a copy of the trunk's
  `stage{s}_block{j}` (the spec's initialisation from a pretrained trunk); a missing
  classmate head keeps `like`'s value (its fresh initialisation). Returns the dict and the
  names filled, as 'aux_stage2_block1 <- stage2_block1' or 'head_cm1 (fresh)'.
  """
  out, filled = dict(loaded), []
  for name, value in like.items():
    if name in loaded:
      continue
    source = name.removeprefix(AUX_PREFIX)
    if name.startswith(AUX_PREFIX) and source in loaded:
      out[name] = loaded[source]
      filled.append(f'{name} <- {source}')
    elif name.startswith(HEAD_PREFIX):
      out[name] = value
      filled.append(f'{name} (fresh)')
  return out, filled
