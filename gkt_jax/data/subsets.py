"""Fixed subsets of a training split: a class-stratified smaller training set
(`load_dataset(..., train_examples_per_class=n)`) and the sample the training accuracy is
measured on (`train_sample`).

Both are functions of the split's labels (or size) alone, with a fixed generator: every method,
seed and run of a dataset gets the same images.
"""

from __future__ import annotations

import numpy as np



def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_examples_per_class(value, name: str) -> int:
  """`value` as an int >= 1, else one-line ValueError naming it."""
  if not _is_int(value) or value < 1:
    raise ValueError(f'{name}: train_examples_per_class={value!r} must be an integer >= 1 '
                     '(or None: the whole train split)')
  return int(value)


def class_stratified_indices(labels: np.ndarray, per_class: int, num_classes: int,
                             name: str = 'dataset') -> np.ndarray:
  """Indices of `per_class` training examples of every class, the same on every call.

  One generator `np.random.default_rng(0)` draws, for class 0, 1, ..., num_classes - 1 in
  turn, a permutation of that class's indices (ascending before permuting); the first
  `per_class` of it are kept. The permutations do not depend on `per_class`, so a smaller
  subset is contained in a larger one.

  Args:
    labels: int[N], the train split's labels, in [0, num_classes).
    per_class: examples to keep of each class, 1 <= per_class <= the smallest class's count.
    num_classes: C.
    name: the dataset's name, for messages.

  Returns:
    int64[C * per_class], sorted ascending (the split's own order is kept).

  Raises:
    ValueError: per_class not an integer >= 1, or more than some class has (one line).
  """
  per_class = check_examples_per_class(per_class, name)
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes)
  if per_class > counts.min():
    smallest = int(np.argmin(counts))
    raise ValueError(f'{name}: train_examples_per_class={per_class} is more than class '
                     f'{smallest} has ({counts[smallest]} train examples); allowed: 1 to '
                     f'{counts.min()}')
  rng = np.random.default_rng(0)
  kept = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
  return np.sort(np.concatenate(kept)).astype(np.int64)


def train_sample(num_train: int, max_examples: int | None) -> np.ndarray | None:
  """The training examples the training accuracy is measured on: None (all of them) when
  `max_examples` is None or >= num_train, else int64[max_examples], sorted ascending, drawn
  without replacement by `np.random.default_rng(0)` (the same sample in every run)."""
  if max_examples is None or max_examples >= num_train:
    return None
  if not _is_int(max_examples) or max_examples < 1:
    raise ValueError(f'train_accuracy_examples={max_examples!r} must be an integer >= 1 or '
                     'None (the whole train split)')
  rng = np.random.default_rng(0)
  return np.sort(rng.choice(num_train, size=int(max_examples), replace=False)).astype(np.int64)
