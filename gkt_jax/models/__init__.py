"""Models: networks that take a traced keep mask over their residual blocks.

A maskable network is any Flax module with `stage_sizes`, `num_blocks` and
`apply(variables, x, keep_mask=..., train=..., residual_scale=...) -> (logits, features)`,
its blocks named 'stage{s}_block{j}' with the droppable part in a submodule 'branch' (FLOP
accounting, models/cost.py) and its input layer 'stem_conv' (export). Architectures are
found by name in `ARCHITECTURES`: ResNets (resnet.py), Wide ResNets (wide_resnet.py) and
vision transformers (vit.py). A new one is a file here and one `register` call below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools

from flax import linen as nn

from gkt_jax.config import model as model_config
from gkt_jax.models import resnet, vit, wide_resnet
from gkt_jax.models.classmate import ClassmateResNet, with_classmates
from gkt_jax.models.conv import conv2d
from gkt_jax.models.resnet import ResNet, SideInputResNet, resnet_fields

_IMAGENET_STAGES = {18: ((2, 2, 2, 2), 'basic'), 34: ((3, 4, 6, 3), 'basic'),
                    50: ((3, 4, 6, 3), 'bottleneck')}
CIFAR_DEPTHS = model_config.CIFAR_RESNET_DEPTHS  # 8 and 14: small res-students (ResKD)


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A network by name: `build(num_classes, **fields)` and the `config.model` fields (besides
  'arch') it accepts, those of its settings class (gkt_jax/config/model.py)."""
  build: Callable[..., nn.Module]
  fields: tuple[str, ...]


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, build: Callable[..., nn.Module],
             settings: type[model_config.Network] | Sequence[str]) -> None:
  """Adds an architecture: `build(num_classes, **fields)` returns a maskable network;
  `settings`: its config fields, a settings class of gkt_jax.config.model or a list of field
  names (then checked by `build` alone)."""
  if not isinstance(settings, type):
    settings = model_config.settings_with_fields(settings)
  model_config.ARCHITECTURES[name] = settings
  ARCHITECTURES[name] = Architecture(
      build, tuple(sorted(n for n in settings.names() if n != 'arch')))


def unregister(name: str) -> None:
  """Removes an architecture added by `register`."""
  ARCHITECTURES.pop(name)
  model_config.ARCHITECTURES.pop(name)


def module_fields(cls: type[nn.Module], exclude: Sequence[str] = ()) -> tuple[str, ...]:
  """The dataclass fields of a Flax module a config may set."""
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in ('parent', 'name', *exclude))


def cifar_resnet(depth: int, num_classes: int, *,
                 width_multiplier: float = resnet.DEFAULTS.width_multiplier,
                 shortcut: str = 'pad', **kwargs) -> ResNet:
  """The CIFAR ResNet of He et al. (2016): depth 6n+2, three stages of n basic blocks,
  16/32/64 channels (times `width_multiplier`), 3x3 stem."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'CIFAR ResNet depth={depth} is not of the form 6n+2 (e.g. {CIFAR_DEPTHS})')
  n = (depth - 2) // 6
  widths = _widths((16, 32, 64), width_multiplier)
  return ResNet(stage_sizes=(n, n, n), stage_widths=widths, num_classes=num_classes,
                block='basic', stem='cifar', stem_width=widths[0], shortcut=shortcut, **kwargs)


def imagenet_resnet(depth: int, num_classes: int, *,
                    width_multiplier: float = resnet.DEFAULTS.width_multiplier,
                    stem: str = 'imagenet', shortcut: str = 'projection',
                    **kwargs) -> ResNet:
  """ResNet-18/34/50 of torchvision's layout; stem='cifar' for small (e.g. 32x32) inputs."""
  if depth not in _IMAGENET_STAGES:
    raise ValueError(f'ImageNet ResNet depth={depth} is not one of {sorted(_IMAGENET_STAGES)}')
  stages, block = _IMAGENET_STAGES[depth]
  widths = _widths((64, 128, 256, 512), width_multiplier)
  return ResNet(stage_sizes=stages, stage_widths=widths, num_classes=num_classes, block=block,
                stem=stem, stem_width=widths[0], shortcut=shortcut, **kwargs)


def from_config(model_config, num_classes: int) -> nn.Module:
  """`build_model` from a config's model section (a ConfigDict or dict with 'arch' and the
  architecture's fields)."""
  fields = dict(model_config)
  return build_model(fields.pop('arch'), num_classes, **fields)


def _widths(base: tuple[int, ...], width_multiplier: float) -> tuple[int, ...]:
  """Stage widths `base` scaled by `width_multiplier` (> 0), rounded, at least 1."""
  if not (isinstance(width_multiplier, (int, float)) and width_multiplier > 0):
    raise ValueError(f'width_multiplier={width_multiplier!r}: must be a number > 0')
  return tuple(max(1, round(w * width_multiplier)) for w in base)


def with_side_input(model: ResNet, side_features_dim: int) -> SideInputResNet:
  """`model` whose head also reads `side_features` f32[N, side_features_dim] (ResKD: a
  res-student given the frozen student's pre-logits)."""
  return SideInputResNet(**resnet_fields(model), side_features_dim=side_features_dim)


def build_resnet(arch: str, num_classes: int, *,
                 width_multiplier: float = resnet.DEFAULTS.width_multiplier,
                 shortcut: str | None = None, stem: str | None = None,
                 conv_impl: str = resnet.DEFAULTS.conv_impl, **kwargs) -> ResNet:
  """A ResNet by name.

  Args:
    arch: 'resnet8/14/20/32/44/56/110' (CIFAR ResNets, depth 6n+2, three stages of basic
      blocks, 16/32/64 channels; 8 and 14 are ResKD's small res-students) or
      'resnet18/34/50' (torchvision's layout).
    num_classes: classifier outputs (>= 1).
    width_multiplier: scales every stage width (> 0; widths are rounded, at least 1).
    shortcut: 'pad' (CIFAR default: parameter-free, option A) or 'projection' (1x1 conv +
      BN; default of resnet18/34/50); None: the architecture's default.
    stem: CIFAR ResNets: 'cifar' only; resnet18/34/50: 'imagenet' (default: 7x7 stride-2
      conv + max pool) or 'cifar' (3x3 stride 1, for 32x32 inputs).
    conv_impl: 'auto', 'xla' or 'canonical' (see `conv.py`).
    **kwargs: further `ResNet` fields: bn_momentum, dtype, block_barriers, masked_saves,
      pad_downsample (see `ResNet`).

  Every value is checked here; a bad one raises ValueError naming it and what is allowed.
  """
  depth = int(arch.removeprefix('resnet'))
  extra = dict(conv_impl=conv_impl, width_multiplier=width_multiplier, **kwargs)
  if shortcut is not None:
    extra['shortcut'] = shortcut
  if depth in CIFAR_DEPTHS:
    if stem not in (None, 'cifar'):
      raise ValueError(f'model.stem={stem!r}: CIFAR ResNets ({arch}) only have the cifar stem '
                       "(use 'cifar' or None)")
    return cifar_resnet(depth, num_classes, **extra)
  return imagenet_resnet(depth, num_classes, stem=stem or 'imagenet', **extra)


for _depth in CIFAR_DEPTHS + tuple(_IMAGENET_STAGES):
  register(f'resnet{_depth}', functools.partial(build_resnet, f'resnet{_depth}'),
           model_config.ResNetSettings)
for _size in vit.SIZES:  # ViT-Ti, ViT-S
  register(f'vit_{_size}', functools.partial(vit.build_vit, _size), model_config.ViTSettings)
for _depth, _k in ((16, 4), (28, 10)):  # WRN-16-4, WRN-28-10
  register(f'wrn{_depth}_{_k}', functools.partial(wide_resnet.WideResNet, _depth, _k),
           model_config.WideResNetSettings)
ARCHS = tuple(ARCHITECTURES)  # those registered here (ARCHITECTURES: later ones too)


def build_model(arch: str, num_classes: int, **fields) -> nn.Module:
  """Builds the network `arch` (a name in `ARCHITECTURES`) with `fields` (its
  `Architecture.fields`; for ResNets see `build_resnet`). A bad name or value raises
  ValueError naming it."""
  if arch not in ARCHITECTURES:
    raise ValueError(f'model.arch={arch!r} is not one of {tuple(ARCHITECTURES)}')
  entry = ARCHITECTURES[arch]
  unknown = sorted(set(fields) - set(entry.fields))
  if unknown:
    raise ValueError(f'model.{unknown[0]} is not a field of {arch}; accepted: {entry.fields}')
  return entry.build(num_classes, **fields)


__all__ = ['ARCHITECTURES', 'ARCHS', 'Architecture', 'ClassmateResNet', 'ResNet',
           'SideInputResNet', 'build_model', 'cifar_resnet', 'conv2d', 'from_config',
           'imagenet_resnet', 'register', 'unregister', 'build_resnet', 'with_classmates',
           'with_side_input']
