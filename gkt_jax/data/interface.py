"""The dataset interface the trainer uses, as typing Protocols (documented in `gkt_jax.data`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TrainBatchSource(Protocol):
  """Training batches that are a function of (seed, step): `Dataset.train_batches(...)`."""

  @property
  def steps_per_epoch(self) -> int:
    """Number of full batches per epoch, N // batch_size."""

  def get(self, step: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` (None: all B) of global batch `step`: (uint8[b, H, W, C], int32[b])."""


@runtime_checkable
class Dataset(Protocol):
  """A labelled image dataset: ArrayDataset, tfds_data.TfdsDataset."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  num_train: int
  num_test: int

  def train_batches(self, batch_size: int, *, seed: int,
                    augment: dict | None = None) -> TrainBatchSource:
    """Training batches; see `gkt_jax.data`."""

  def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The test split in order, in padded fixed-size batches; see `gkt_jax.data`."""

  def train_eval_batches(self, batch_size: int, indices: np.ndarray | None = None
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The train split (or its examples `indices`) in order, test-time transform, in padded
    fixed-size batches; see `gkt_jax.data`."""
