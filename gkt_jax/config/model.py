"""`config.model`: one settings class per architecture family (ResNets, Wide ResNets, vision
transformers), found by the network's name in `ARCHITECTURES`.

  read({'arch': 'resnet56', 'shortcut': 'pad'})  # ResNetSettings, checked
  ARCHITECTURES['wrn28_10'].defaults()           # a WRN's fields at their defaults

A field whose default is None takes the architecture's own value (e.g. a ResNet's shortcut:
'pad' for the CIFAR ResNets, 'projection' for ResNet-18/34/50). `gkt_jax.models` builds the
network from these fields (`build_model`, `from_config`) and adds a network registered later
here too (`models.register`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from gkt_jax import settings as settings_lib
from gkt_jax.config import names
from gkt_jax.settings import integer, interval, one_of, optional, positive, setting

# The computation dtypes a network may run in (its parameters stay float32).
DTYPES = ('float32', 'bfloat16', 'float16')
CIFAR_RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # 6n + 2; 8 and 14: ResKD's res-students
IMAGENET_RESNET_DEPTHS = (18, 34, 50)


def _dtype(field: str, value: Any) -> None:
  """A dtype by name ('bfloat16') or as a type (jnp.bfloat16)."""
  name = value if isinstance(value, str) else getattr(value, '__name__', str(value))
  if name not in DTYPES:
    settings_lib.fail(field, value, f'unknown dtype; allowed: {DTYPES}')


def _known_arch(field: str, value: Any) -> None:
  one_of(tuple(ARCHITECTURES), 'architecture')(field, value)  # those registered by now


@dataclasses.dataclass(frozen=True)
class Network(settings_lib.Settings):
  """A network's registered name, the one field every model section has."""
  arch: str | None = setting(None, optional(_known_arch), unset=str)


@dataclasses.dataclass(frozen=True)
class ModelSettings(Network):
  """The fields of every network of the families here: how it computes."""
  conv_impl: str = setting('auto', one_of(names.CONV_IMPLS, 'conv implementation'))
  dtype: str = setting('float32', _dtype)


def _bn_momentum() -> Any:
  """BatchNorm's running-statistics momentum (Flax convention: PyTorch's 0.1 is 0.9)."""
  return setting(0.9, interval(0.0, 1.0, high_open=True))


@dataclasses.dataclass(frozen=True)
class ResNetSettings(ModelSettings):
  """ResNets (gkt_jax/models/resnet.py): width_multiplier scales every stage; shortcut
  'pad' (parameter-free) or 'projection' (None: 'pad' for CIFAR ResNets, 'projection' for
  ResNet-18/34/50); stem 'cifar' or 'imagenet' (None: 'cifar' for CIFAR ResNets, 'imagenet'
  for ResNet-18/34/50; those also take 'cifar' on 32x32 inputs); block_barriers,
  masked_saves and pad_downsample as `ResNet`'s."""
  width_multiplier: float = setting(1.0, positive)
  shortcut: str | None = setting(None, optional(one_of(names.SHORTCUTS, 'shortcut')),
                                 unset=str)
  stem: str | None = setting(None, optional(one_of(names.STEMS, 'stem')), unset=str)
  bn_momentum: float = _bn_momentum()
  block_barriers: bool | str = setting(
      'auto', one_of(names.BLOCK_BARRIERS, 'block_barriers value'))
  masked_saves: str = setting('conv_outputs', one_of(names.MASKED_SAVES, 'masked_saves value'))
  pad_downsample: str = setting('subsample',
                                one_of(names.PAD_DOWNSAMPLES, 'pad_downsample value'))


@dataclasses.dataclass(frozen=True)
class WideResNetSettings(ModelSettings):
  """Wide ResNets (gkt_jax/models/wide_resnet.py): dropout between a branch's two
  convolutions in train mode (WRN-28-10's reference CIFAR results use 0.3)."""
  bn_momentum: float = _bn_momentum()
  dropout_rate: float = setting(0.0, interval(0.0, 1.0, high_open=True))


@dataclasses.dataclass(frozen=True)
class ViTSettings(ModelSettings):
  """Vision transformers (gkt_jax/models/vit.py): width and heads None take the size's
  (ViT-Ti 192 and 3, ViT-S 384 and 6); patch_size None: 4 for inputs of side >= 32, else
  2."""
  width: int | None = setting(None, optional(integer(1)), unset=int)
  depth: int = setting(12, integer(1))
  heads: int | None = setting(None, optional(integer(1)), unset=int)
  mlp_ratio: int = setting(4, integer(1))
  patch_size: int | None = setting(None, optional(integer(1)), unset=int)


# Every network by its registered name (`config.model.arch`).
ARCHITECTURES: dict[str, type[Network]] = {
    **{f'resnet{d}': ResNetSettings
       for d in CIFAR_RESNET_DEPTHS + IMAGENET_RESNET_DEPTHS},
    'vit_ti': ViTSettings, 'vit_s': ViTSettings,
    'wrn16_4': WideResNetSettings, 'wrn28_10': WideResNetSettings,
}
FAMILIES = {'resnet': ResNetSettings, 'wrn': WideResNetSettings, 'vit': ViTSettings}


def settings_with_fields(fields: Sequence[str]) -> type[Network]:
  """A settings class accepting `fields` beside `arch`, unchecked here (the network's builder
  checks them): for a network registered with a list of field names."""
  extra = [(name, Any, setting(None, settings_lib.unchecked))
           for name in sorted(set(fields) - {'arch'})]
  return dataclasses.make_dataclass('FieldsSettings', extra, bases=(Network,), frozen=True)


def family(arch: str) -> str:
  """'resnet', 'wrn' or 'vit' by the settings class of `arch`; 'other' for a network
  registered with its own."""
  cls = ARCHITECTURES.get(arch)
  return next((name for name, c in FAMILIES.items() if c is cls), 'other')


def read(section: Mapping[str, Any] | Network) -> Network:
  """Checked settings of a `config.model` section (`arch` required; its class by name)."""
  if isinstance(section, Network):
    return section
  arch = section.get('arch')
  if arch is None:
    settings_lib.fail('model.arch', None, f'required; allowed: {tuple(ARCHITECTURES)}')
  one_of(tuple(ARCHITECTURES), 'architecture')('model.arch', arch)
  return ARCHITECTURES[arch].read(section, 'model', owner=f'the model {arch!r}')
