"""Datasets held in host memory: `ArrayDataset` and how one is made (normalisation
statistics from the train images, read-only arrays). The loaders of `sources` and
`tiny_imagenet` build on it."""

from collections.abc import Iterator
import dataclasses

import numpy as np

from gkt_jax.data import pipeline
from gkt_jax.data import subsets


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A labelled image dataset held in host memory (arrays are read-only).

  Attributes:
    name: the dataset's name, as given to `load_dataset`.
    train_images: uint8[N, H, W, C].
    train_labels: int32[N], in [0, num_classes).
    test_images: uint8[M, H, W, C].
    test_labels: int32[M].
    num_classes: number of classes.
    mean: float32[C], per-channel mean of the train images in [0, 1] units.
    std: float32[C], per-channel (population) standard deviation of the train images in
      [0, 1] units.
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: np.ndarray
  std: np.ndarray

  def __post_init__(self):
    for split in ('train', 'test'):
      images = getattr(self, f'{split}_images')
      labels = getattr(self, f'{split}_labels')
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f'{self.name}: {split}_images must be uint8[N, H, W, C], got '
                         f'{images.dtype}{list(images.shape)}')
      if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
        raise ValueError(f'{self.name}: {split}_labels must be int32[{len(images)}], got '
                         f'{labels.dtype}{list(labels.shape)}')
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise ValueError(f'{self.name}: {split}_labels outside [0, {self.num_classes})')
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise ValueError(f'{self.name}: train images {self.train_images.shape[1:]} and test '
                       f'images {self.test_images.shape[1:]} differ in shape')

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C)."""
    return tuple(self.train_images.shape[1:])

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_test(self) -> int:
    return len(self.test_labels)

  def train_batches(self, batch_size: int, *, seed: int,
                    augment: dict | None = None) -> pipeline.TrainBatches:
    """`TrainBatches` over the train split; augment: None or dict(pad=int, flip=bool)."""
    return pipeline.TrainBatches(self.train_images, self.train_labels, batch_size, seed=seed,
                                 augment=augment)

  def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """`pipeline.eval_batches` over the test split, in order."""
    return pipeline.eval_batches(self.test_images, self.test_labels, batch_size)

  def train_eval_batches(self, batch_size: int, indices: np.ndarray | None = None
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """`pipeline.eval_batches` over the train split (or its examples `indices`, int[n]), in
    order, without augmentation: what the training accuracy is measured on."""
    if indices is None:
      return pipeline.eval_batches(self.train_images, self.train_labels, batch_size)
    return pipeline.eval_batches(self.train_images[indices], self.train_labels[indices],
                                 batch_size)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact per-channel mean and population std of uint8[N, H, W, C] in [0, 1] units.

  Returns (float32[C], float32[C]); computed from 256-bin histograms, so no float copy of the
  images is made.
  """
  values = np.arange(256, dtype=np.float64) / 255.0
  means, stds = [], []
  for c in range(images.shape[-1]):
    counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
    total = counts.sum()
    mean = counts @ values / total
    var = counts @ (values - mean) ** 2 / total
    means.append(mean)
    stds.append(np.sqrt(var))
  return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def _readonly(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


def make_array_dataset(name, train_images, train_labels, test_images, test_labels,
                       num_classes) -> ArrayDataset:
  """An ArrayDataset with read-only contiguous arrays and mean/std from the train images."""
  mean, std = channel_stats(train_images)
  return ArrayDataset(
      name=name,
      train_images=_readonly(np.ascontiguousarray(train_images, np.uint8)),
      train_labels=_readonly(np.ascontiguousarray(train_labels, np.int32)),
      test_images=_readonly(np.ascontiguousarray(test_images, np.uint8)),
      test_labels=_readonly(np.ascontiguousarray(test_labels, np.int32)),
      num_classes=num_classes, mean=_readonly(mean), std=_readonly(std))


def first_test_examples(dataset: ArrayDataset, count: int | None) -> ArrayDataset:
  """`dataset` evaluated on its first `count` test examples only (None: all of them)."""
  if count is None:
    return dataset
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise ValueError(f'{dataset.name}: test_examples={count!r} must be an integer >= 1')
  return dataclasses.replace(dataset, test_images=dataset.test_images[:count],
                             test_labels=dataset.test_labels[:count])


def train_examples_per_class(dataset: ArrayDataset, per_class: int) -> ArrayDataset:
  """`dataset` with its train split cut to `per_class` examples of every class
  (`subsets.class_stratified_indices`); the test split, and the normalisation statistics of
  the whole train split, stay as they are."""
  kept = subsets.class_stratified_indices(dataset.train_labels, per_class, dataset.num_classes,
                                          dataset.name)
  return dataclasses.replace(dataset, train_images=_readonly(dataset.train_images[kept]),
                             train_labels=_readonly(dataset.train_labels[kept]))
