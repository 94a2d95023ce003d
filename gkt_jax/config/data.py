"""`config.data`: the dataset, its batches, augmentation and options, one settings class
with its fields, defaults and checks.

  s = read(config.data)
  s.name, s.batch_size, s.eval_batch_size    # 'cifar10', 128, 500
  s.augment.arguments()                      # {'pad': 4, 'flip': True}: the pipeline's
  s.options                                  # the loader's keyword arguments

Datasets are found by name in `DATASETS` (filled by gkt_jax.data's registry, so that a
dataset registered there is known here without importing it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any, Self

import ml_collections

from gkt_jax import settings as settings_lib
from gkt_jax.settings import boolean, integer, optional, setting

# The registered datasets' names: gkt_jax/data/sources.py `register_dataset` adds them.
DATASETS: list[str] = ['digits', 'fashion_mnist', 'mnist', 'tiny_imagenet', 'cifar10',
                       'cifar100', 'imagenet2012', 'imagenet_resized/32x32',
                       'imagenet_resized/64x64']
_Section = (Mapping, ml_collections.ConfigDict)


def _known_dataset(field: str, value: Any) -> None:
  if value not in DATASETS:
    settings_lib.fail(field, value, f'unknown dataset; allowed: {tuple(DATASETS)}')


def _positive_pair(field: str, value: Any) -> None:
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
      or not all(settings_lib.is_number(v) and v > 0 for v in value) or value[0] > value[1]):
    settings_lib.fail(field, value, 'must be (low, high) with 0 < low <= high')


@dataclasses.dataclass(frozen=True)
class AugmentSettings(settings_lib.Settings):
  """`config.data.augment`, drawn once per batch so that every subnet sees the same images:
  a random crop of the image zero-padded by `pad` pixels and a horizontal flip (in-memory
  and CIFAR datasets), or a random-resized crop (area fraction in `scale`, aspect ratio in
  `ratio`) and flip (imagenet2012)."""
  pad: int = setting(0, integer(0))
  flip: bool = setting(False, boolean)
  random_resized_crop: bool = setting(False, boolean)
  scale: tuple[float, float] = setting((0.08, 1.0), _positive_pair)
  ratio: tuple[float, float] = setting((3 / 4, 4 / 3), _positive_pair)

  def arguments(self) -> dict[str, Any]:
    """The fields away from their defaults: the batch pipeline's `augment` argument."""
    defaults = type(self)()
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(defaults, f.name)}


def _options(field: str, value: Any) -> None:
  """The loader's keyword arguments: `train_examples_per_class` (None: the whole train split;
  n: a fixed class-stratified subset, n images of every class) and the dataset's own (checked
  by its loader, gkt_jax.data.load_dataset)."""
  if not isinstance(value, _Section):
    settings_lib.fail(field, value, 'must be a dict of the dataset loader\'s options')
  optional(integer(1))(f'{field}.train_examples_per_class',
                       value.get('train_examples_per_class'))


@dataclasses.dataclass(frozen=True)
class DataSettings(settings_lib.Settings):
  """`config.data`: name (required), dir (None: the dataset's default location), batch_size
  (the global training batch, required), eval_batch_size (the global evaluation batch,
  rounded down to a multiple of the device count), augment (AugmentSettings), options (the
  loader's keyword arguments, `_options`)."""
  name: str | None = setting(None, optional(_known_dataset), unset=str)
  dir: str | None = setting(None, optional(settings_lib.text), unset=str)
  batch_size: int | None = setting(None, optional(integer(1)), unset=int)
  eval_batch_size: int = setting(500, integer(1))
  augment: AugmentSettings = setting(AugmentSettings(), settings_lib.unchecked)
  options: Mapping[str, Any] | None = setting(None, optional(_options))

  @classmethod
  def read(cls, section, path: str, **kwargs) -> Self:
    """As `Settings.read`, with `augment` read as AugmentSettings."""
    fields = dict(section.items())
    augment = fields.pop('augment', None)
    augment = AugmentSettings.read(augment or {}, f'{path}.augment',
                                   owner='the augmentation')
    if isinstance(fields.get('options'), ml_collections.ConfigDict):
      fields['options'] = fields['options'].to_dict()
    return dataclasses.replace(super().read(fields, path, **kwargs), augment=augment)

  def check(self, path: str) -> None:
    if self.name is None:
      settings_lib.fail(f'{path}.name', None, f'required; allowed: {tuple(DATASETS)}')
    if self.batch_size is None:
      settings_lib.fail(f'{path}.batch_size', None, 'required: an integer >= 1')


def read(section: Mapping[str, Any] | DataSettings) -> DataSettings:
  """Checked settings of a `config.data` section (absent fields at their defaults)."""
  if isinstance(section, DataSettings):
    return section
  return DataSettings.read(section, 'data', owner='the data section')
