"""Typed settings: one frozen dataclass per config section that holds every field, its
default and its check, so that the config defaults, the validation and the code that reads
the section read one definition.

  @dataclasses.dataclass(frozen=True)
  class GKTSettings(DistillationSettings):
    levels: int = setting(3, integer(1))
    sampler: str = setting('bernoulli', one_of(masks.SAMPLERS, 'sampler'))

`GKTSettings.read(config.method, 'method')` refuses a field it does not have, checks every
value (one-line `ConfigError`, `config.<path>.<field>=<value>: <what is allowed>`) and fills
in the defaults; `GKTSettings.defaults()` is the section's default config. Settings built
directly (`GKTSettings(levels=4)`, research code) are not checked: `read` is the gate.
Cross-field rules of one section go in `check(self, path)`; rules that span sections stay
in `gkt_jax/train/validate.py`.

The check primitives below are shared by every settings class and by the validator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import math
import os
from typing import Any, Self

import ml_collections
from ml_collections.config_dict import placeholder
import numpy as np

Check = Callable[[str, Any], None]


class ConfigError(ValueError):
  """A config field or the data holds a value the run cannot use (one-line message)."""


def fail(field: str, value: Any, allowed: str) -> None:
  if isinstance(value, ml_collections.ConfigDict):  # its repr spans lines
    value = value.to_dict()
  raise ConfigError(f'config.{field}={value!r}: {allowed}')


def is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
  return ((is_int(value) or isinstance(value, (float, np.floating)))
          and math.isfinite(float(value)))


def integer(minimum: int) -> Check:
  def check(field, value):
    if not is_int(value) or value < minimum:
      fail(field, value, f'must be an integer >= {minimum}')
  return check


def interval(low: float, high: float = math.inf, *, low_open: bool = False,
             high_open: bool = False, what: str = 'a number') -> Check:
  """A finite number in the interval; `[low, inf)` prints as `>= low`."""
  if high == math.inf:
    allowed = f'must be {what} {">" if low_open else ">="} {low:g}'
  else:
    allowed = (f'must be {what} in {"(" if low_open else "["}{low:g}, {high:g}'
               f'{")" if high_open else "]"}')

  def check(field, value):
    if not is_number(value):
      fail(field, value, allowed)
    x = float(value)
    if x < low or (low_open and x == low) or x > high or (high_open and x == high):
      fail(field, value, allowed)
  return check


def one_of(choices: Sequence[Any] | Mapping[str, Any], what: str) -> Check:
  """`value` in `choices` (a registry's keys are read at each check)."""
  def check(field, value):
    try:
      known = value in choices
    except TypeError:  # unhashable, e.g. a list, against a registry
      known = False
    if not known:
      fail(field, value, f'unknown {what}; allowed: {tuple(choices)}')
  return check


def boolean(field: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    fail(field, value, 'must be True or False')


def text(field: str, value: Any) -> None:
  if not isinstance(value, str):
    fail(field, value, 'must be a string')


def unchecked(field: str, value: Any) -> None:
  """No check here: the value's user checks it (e.g. a nested section read on its own)."""
  del field, value


def optional(check: Check) -> Check:
  def optional_check(field, value):
    if value is not None:
      check(field, value)
  return optional_check


def positive_ints(field: str, value: Any) -> None:
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
      or not all(is_int(v) and v >= 1 for v in value)):
    fail(field, value, 'must be a non-empty sequence of integers >= 1')


def run_dir(field: str, value: Any) -> None:
  """The workdir of a trained run (its config.json and checkpoints)."""
  if not isinstance(value, str) or not value:
    fail(field, value, 'must be the workdir of a trained run (a path)')
  if not os.path.exists(os.path.join(value, 'config.json')):
    fail(field, value, 'no config.json there: must be the workdir of a trained run')


def run_dirs(field: str, value: Any) -> None:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    fail(field, value, 'must be a list of workdirs of trained runs')
  for i, item in enumerate(value):
    run_dir(f'{field}[{i}]', item)


probability = interval(0.0, 1.0, what='a probability')
non_negative = interval(0.0)
positive = interval(0.0, low_open=True)


def setting(default: Any, check: Check, *, unset: type | None = None,
            listed: bool = True) -> Any:
  """A settings field: its default and its check. `unset`: the type of a field whose
  default is None, so that the default config holds a typed placeholder for it (a
  command-line override then parses as that type). `listed=False`: the default config
  leaves the field out (a config that uses it adds it), so that adding a field changes no
  existing config; absent, it takes its default."""
  return dataclasses.field(default=default,
                           metadata={'check': check, 'unset': unset, 'listed': listed})


def _dotted(path: str, name: str) -> str:
  """'path.name', or 'name' for a top-level field (path '')."""
  return f'{path}.{name}' if path else name


def _frozen(value: Any) -> Any:
  """Lists (JSON, ConfigDict) as tuples, so that settings compare and hash by value."""
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


@dataclasses.dataclass(frozen=True)
class Settings:
  """Base of a section's settings; subclasses declare fields with `setting(...)`."""

  @classmethod
  def names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def defaults(cls) -> dict[str, Any]:
    """The section's default config; a None default of a typed field is a fresh placeholder
    (a placeholder is a shared reference: one per config, never one per class)."""
    out = {}
    for f in dataclasses.fields(cls):
      if not f.metadata.get('listed', True):
        continue
      unset = f.metadata.get('unset')
      out[f.name] = placeholder(unset) if f.default is None and unset else f.default
      if isinstance(f.default, Settings):  # a nested section
        out[f.name] = type(f.default).defaults()
    return out

  @classmethod
  def read(cls, section: Mapping[str, Any] | ml_collections.ConfigDict, path: str,
           *, owner: str | None = None, ignore: Sequence[str] = ()) -> Self:
    """Checked settings from a config section (missing fields take their defaults).

    Args:
      section: the fields, e.g. `config.method`.
      path: its dotted name in the config, for messages ('method').
      owner: what the section configures, for messages (default: the class name).
      ignore: fields of the section that are not settings (e.g. 'name').

    Raises:
      ConfigError: one line for the first unknown field, bad value or broken rule.
    """
    names = cls.names()
    values = {}
    for name, value in section.items():
      if name in ignore:
        continue
      if name not in names:
        accepted = tuple(sorted(names + tuple(ignore)))
        fail(_dotted(path, name), value,
             f'not a field of {owner or cls.__name__}; accepted: {accepted}')
      values[name] = _frozen(value)
    for f in dataclasses.fields(cls):
      if f.name in values:
        f.metadata['check'](_dotted(path, f.name), values[f.name])
    settings = cls(**values)
    settings.check(path)
    return settings

  def check(self, path: str) -> None:
    """Rules between this section's fields (subclasses); `path` as in `read`."""
    del path
