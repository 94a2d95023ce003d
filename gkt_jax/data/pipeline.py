"""Deterministic, resumable training batches and fixed-shape evaluation batches."""

from collections.abc import Iterator

import numpy as np

from gkt_jax.config import data as data_config
from gkt_jax.data import augment as augment_lib

# Salt of the augmentation seed, so augmentation draws never coincide with epoch orders.
AUGMENT_SALT = 1_000_003
_AUGMENT_KEYS = ('pad', 'flip')
# What an absent augmentation field means (config.data.augment's defaults).
AUGMENT_DEFAULTS = data_config.AugmentSettings()


class TrainBatches:
  """Shuffled training batches that depend only on (seed, step).

  Epoch e visits the examples in the order `np.random.default_rng([seed, e]).permutation(N)`,
  cut into `steps_per_epoch = N // batch_size` batches; the last `N % batch_size` examples of
  each epoch's order are dropped. Step s is batch s % steps_per_epoch of epoch
  s // steps_per_epoch. Augmentation of step s draws from
  `np.random.default_rng([seed, 1_000_003, s])`. So the data iterator's whole position is the
  step: resuming at step s needs nothing but s.

  Images stay uint8 (the trainer normalises on device).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int,
               augment: dict | None = None):
    """Args:
      images: [N, H, W, C] (uint8 for real data).
      labels: int[N].
      batch_size: examples per batch, 1 <= batch_size <= N.
      seed: non-negative int.
      augment: None, or dict(pad=int >= 0, flip=bool) for `pad_crop_flip`; missing keys mean
        pad=0, flip=False.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
      raise ValueError(f'images must be [N, H, W, C], got shape {images.shape}')
    if labels.shape != images.shape[:1]:
      raise ValueError(f'labels shape {labels.shape} does not match {len(images)} images')
    num_examples = len(images)
    batch_size, seed = check_batch_args(batch_size, num_examples, seed)
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(_AUGMENT_KEYS))
    if unknown:
      raise ValueError(f'augment has unknown keys {unknown}; allowed: {list(_AUGMENT_KEYS)}')
    self._pad = int(augment.get('pad', AUGMENT_DEFAULTS.pad))
    self._flip = bool(augment.get('flip', AUGMENT_DEFAULTS.flip))
    if self._pad < 0:
      raise ValueError(f'augment pad={self._pad} must be >= 0')
    self.images = images
    self.labels = labels.astype(np.int32, copy=False)
    self.batch_size = batch_size
    self.seed = int(seed)
    self._steps_per_epoch = num_examples // batch_size
    self._cached_epoch = None
    self._cached_order = None

  @property
  def steps_per_epoch(self) -> int:
    """N // batch_size."""
    return self._steps_per_epoch

  def epoch_order(self, epoch: int) -> np.ndarray:
    """int[N], the order in which epoch `epoch` visits the examples."""
    if epoch != self._cached_epoch:
      self._cached_order = np.random.default_rng([self.seed, epoch]).permutation(
          len(self.labels))
      self._cached_epoch = epoch
    return self._cached_order

  def indices(self, step: int) -> np.ndarray:
    """int[B], the example indices of batch `step`."""
    step = int(step)
    if step < 0:
      raise ValueError(f'step={step} must be >= 0')
    epoch, within = divmod(step, self._steps_per_epoch)
    start = within * self.batch_size
    return self.epoch_order(epoch)[start:start + self.batch_size]

  @property
  def device_augment_pad(self) -> int | None:
    """The `pad` of the pad-crop-flip that `get_for_device`'s crops ask the step to apply,
    or None without augmentation (then `get` and `get_for_device` give the same images)."""
    return self._pad if (self._pad or self._flip) else None

  def _draws(self, step: int, rows: slice):
    """Rows `rows` of the pad-crop-flip draws of batch `step`: (offsets, flips), each None
    when not drawn; drawn for the whole batch, so they do not depend on `rows`."""
    rng = np.random.default_rng([self.seed, AUGMENT_SALT, int(step)])
    offsets, flips = augment_lib.pad_crop_flip_params(rng, self.batch_size, pad=self._pad,
                                                       flip=self._flip)
    return (None if offsets is None else offsets[rows], None if flips is None else flips[rows])

  def get(self, step: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of the batch of `step`: (images [b, H, W, C] in the input dtype,
    labels int32[b]); rows=None gives the whole batch (b = B).

    The augmentation draws for the whole batch are made first, so `get(step, rows)` equals
    `get(step)` sliced by `rows`, bitwise, while only the selected rows are gathered and
    cropped.
    """
    rows = check_rows(rows, self.batch_size)
    idx = self.indices(step)[rows]
    images = self.images[idx]
    if self.device_augment_pad is not None:
      images = augment_lib.apply_pad_crop_flip(images, *self._draws(step, rows), pad=self._pad)
    return images, self.labels[idx]

  def get_for_device(self, step: int, rows: slice | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`get` with the crop and flip left to the device: (images as stored, labels,
    int32[b, 3] crops of `augment.crop_table`, or None without augmentation);
    `augment.device_pad_crop_flip(images, crops, pad=device_augment_pad)` is `get`'s images.
    The host then only gathers rows: the training step does the per-pixel work."""
    rows = check_rows(rows, self.batch_size)
    idx = self.indices(step)[rows]
    crops = None
    if self.device_augment_pad is not None:
      crops = augment_lib.crop_table(*self._draws(step, rows), len(idx))
    return self.images[idx], self.labels[idx], crops

  def iterate(self, start_step: int = 0, rows: slice | None = None, *,
              for_device: bool = False) -> Iterator[tuple]:
    """Yields (step, *get(step, rows)) for step = start_step, start_step + 1, ... forever;
    with `for_device`, (step, *get_for_device(step, rows))."""
    get = self.get_for_device if for_device else self.get
    step = int(start_step)
    while True:
      yield (step, *get(step, rows))
      step += 1


def check_batch_args(batch_size, num_examples: int, seed) -> tuple[int, int]:
  """(batch_size, seed) as ints, refusing a batch outside [1, num_examples] or seed < 0."""
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1')
  if batch_size > num_examples:
    raise ValueError(f'batch_size={batch_size} is larger than the {num_examples} training '
                     'examples; use a batch size of at most the dataset size')
  if int(seed) < 0:
    raise ValueError(f'seed={seed} must be a non-negative int')
  return batch_size, int(seed)


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` of `process_count` reads."""
  return slice(process_index * batch_size // process_count,
               (process_index + 1) * batch_size // process_count)


def check_rows(rows: slice | None, batch_size: int) -> slice:
  """`rows` as a slice of range(batch_size) (None: all rows); refuses anything else."""
  if rows is None:
    return slice(0, batch_size)
  if not isinstance(rows, slice):
    raise TypeError(f'rows={rows!r} must be a slice (e.g. slice(p * B // P, (p + 1) * B // P)) '
                    'or None')
  return rows


def pad_batch(images: np.ndarray, labels: np.ndarray,
              batch_size: int) -> tuple[np.ndarray, np.ndarray, int]:
  """(images, labels, num_valid) padded after the real rows with zero images and label 0 to
  exactly `batch_size` rows (the `eval_batches` contract)."""
  num_valid = len(labels)
  if num_valid < batch_size:
    missing = batch_size - num_valid
    images = np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((missing,), labels.dtype)])
  return images, labels, num_valid


def eval_batches(images: np.ndarray, labels: np.ndarray,
                 batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  """Fixed-order batches of one shape, for a jitted evaluation.

  Yields (images [B, ...], labels [B], num_valid) over the data in order; every batch has
  exactly `batch_size` rows. The last batch is padded with zero images and label 0 after its
  `num_valid` real rows; all other batches have num_valid = batch_size. Empty data yields
  nothing.
  """
  images = np.asarray(images)
  labels = np.asarray(labels)
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels')
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1')
  for start in range(0, len(labels), batch_size):
    yield pad_batch(images[start:start + batch_size], labels[start:start + batch_size],
                    batch_size)
