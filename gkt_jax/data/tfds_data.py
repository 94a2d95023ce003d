"""CIFAR and ImageNet through `tfds.data_source` (ArrayRecord, random access) read with grain.

No TensorFlow is needed to read: tfds decodes the stored PNG/JPEG bytes with PIL, and the
augmentations here are numpy/PIL. Preparing the ArrayRecord files does need TensorFlow (tfds
encodes images with it): once, on any machine,

  pip install tensorflow-cpu && tfds build NAME --file_format=array_record --data_dir=DIR

(imagenet2012 also needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, from
image-net.org, in DIR/downloads/manual/). Datasets prepared as TFRecord (the tfds default)
have no random access and are refused. With `cache=True` a fixed-size dataset (CIFAR,
down-sampled ImageNet) is decoded into memory once; the batches are the same.

Batches are random-access functions of (seed, step) like `pipeline.TrainBatches`, built from
grain `MapDataset`s:

  source = grain.MapDataset.source(tfds.data_source(name, split=...))
  train  = source.shuffle(shuffle_seed).map(decode).random_map(augment, seed=augment_seed)

Element p of `train` is example order_e[p mod N] of epoch e = p // N, where order_e is
grain's permutation for that epoch (index_shuffle seeded with shuffle_seed + e), and its
augmentation draws from grain's per-element generator (Philox keyed by augment_seed,
counter p). Row r of global batch s is element
p = (s // S) * N + (s % S) * B + r, with S = N // B steps per epoch (the last N % B examples
of each epoch's order are dropped). shuffle_seed and augment_seed are
`np.random.SeedSequence([seed, 1_000_003]).generate_state(2)`. Every row depends only on
(seed, s, r): resuming needs only the step, and a process reading rows [a, b) of a batch gets
exactly those rows of the full batch.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent import futures
import dataclasses
import os
from typing import Any, NamedTuple

import numpy as np

from gkt_jax.data import augment as augment_lib
from gkt_jax.data import pipeline
from gkt_jax.data import subsets

# Per-channel mean and (population) standard deviation of the training images in [0, 1]
# units: the widely used published values (ImageNet's are torchvision's), not recomputed
# here. ImageNet's are also used for the down-sampled ImageNet (imagenet_resized).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SEED_SALT = 1_000_003
_FIXED_AUGMENT_KEYS = ('pad', 'flip')
_IMAGENET_AUGMENT_KEYS = ('random_resized_crop', 'flip', 'scale', 'ratio')


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """What the loader needs to know about one tfds dataset.

  kind: 'fixed' (every image has image_shape; pad-crop-flip augmentation) or 'imagenet'
    (any size; random-resized-crop for training, resize + center crop otherwise).
  """
  train_split: str
  test_split: str
  num_classes: int
  image_shape: tuple[int, int, int] | None  # None: (image_size, image_size, 3)
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  kind: str


TFDS_DATASETS = {
    'cifar10': TfdsSpec('train', 'test', 10, (32, 32, 3), CIFAR10_MEAN, CIFAR10_STD, 'fixed'),
    'cifar100': TfdsSpec('train', 'test', 100, (32, 32, 3), CIFAR100_MEAN, CIFAR100_STD,
                         'fixed'),
    'imagenet2012': TfdsSpec('train', 'validation', 1000, None, IMAGENET_MEAN, IMAGENET_STD,
                             'imagenet'),
    'imagenet_resized/32x32': TfdsSpec('train', 'validation', 1000, (32, 32, 3), IMAGENET_MEAN,
                                       IMAGENET_STD, 'fixed'),
    'imagenet_resized/64x64': TfdsSpec('train', 'validation', 1000, (64, 64, 3), IMAGENET_MEAN,
                                       IMAGENET_STD, 'fixed'),
}


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return constants.get_default_data_dir()


def prepare_command(name: str, data_dir: str) -> str:
  """The shell command that prepares `name` as ArrayRecord files in `data_dir`."""
  command = (f'pip install tensorflow-cpu && tfds build {name} --file_format=array_record '
             f'--data_dir={data_dir}')
  if name == 'imagenet2012':
    command += (f' (first put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
                f'https://image-net.org in {os.path.join(data_dir, "downloads", "manual")}/)')
  return command


def _diagnose(name: str, data_dir: str) -> Exception | None:
  """The one-line error for a dataset that is not prepared as ArrayRecord, else None."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    return FileNotFoundError(
        f'{name}: not prepared in data_dir={data_dir} (no {builder.data_dir}/'
        f'dataset_info.json); prepare it once (TensorFlow is needed for that only): '
        f'{prepare_command(name, data_dir)}')
  formats = {f.value for f in builder.info.available_file_formats()}
  if 'array_record' not in formats:
    return ValueError(
        f'{name}: prepared in {builder.data_dir} as {sorted(formats)}, which has no random '
        f'access; prepare an ArrayRecord copy in another directory DIR and set '
        f'--config.data.dir=DIR: {prepare_command(name, "DIR")}')
  return None


def open_source(name: str, split: str, data_dir: str):
  """`tfds.data_source(name, split=split, data_dir=data_dir, download=False)`.

  Raises:
    FileNotFoundError: not prepared in data_dir (one line with the command that prepares it).
    ValueError: prepared without random access (TFRecord).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception:  # pylint: disable=broad-except
    # tfds' own messages for a missing dataset are misleading (e.g. "TFRECORD is not
    # supported" for a directory that holds nothing): say what is wrong, else re-raise.
    problem = _diagnose(name, data_dir)
    if problem is None:
      raise
    raise problem from None


class ArraySource:
  """A decoded split in memory, with the data-source interface: len() and [i] ->
  {'image': uint8[H, W, C], 'label': int32}."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images = images
    self.labels = labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self.images[index], 'label': self.labels[index]}


class SubsetSource:
  """Examples `indices` of a data source, with the data-source interface (len, [i])."""

  def __init__(self, source, indices: np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.source[int(self.indices[index])]


def split_labels(name: str, split: str, data_dir: str, source) -> np.ndarray:
  """int64[N], the labels of a split, read with its images left undecoded
  (`tfds.decode.SkipDecoding`); from the decoded examples of `source` where the files cannot
  be read that way (tfds' mock data)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    raw = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                           decoders={'image': tfds.decode.SkipDecoding()})
    examples = raw.__getitems__(list(range(len(raw))))
  except Exception:  # pylint: disable=broad-except
    examples = [source[k] for k in range(len(source))]
  return np.asarray([int(e['label']) for e in examples], np.int64)


def _example_pair(example: dict[str, Any]) -> tuple[np.ndarray, np.int32]:
  """A tfds example -> (image uint8[H, W, C], label int32)."""
  return np.asarray(example['image'], np.uint8), np.int32(example['label'])


def _stack(pairs) -> tuple[np.ndarray, np.ndarray]:
  """[(image, label), ...] -> (uint8[B, H, W, C], int32[B])."""
  images, labels = zip(*pairs)
  return np.stack(images), np.asarray(labels, np.int32)


def _prefetched(make: Callable[[int], Any], keys: Iterator[int], depth: int) -> Iterator:
  """Yields (key, make(key)) for `keys` in order, computing up to `depth` ahead in a thread."""
  if depth <= 0:
    for key in keys:
      yield key, make(key)
    return
  pool = futures.ThreadPoolExecutor(1, thread_name_prefix='gkt_prefetch')
  try:
    pending = collections.deque()
    for key in keys:
      pending.append((key, pool.submit(make, key)))
      if len(pending) > depth:
        done_key, future = pending.popleft()
        yield done_key, future.result()
    while pending:
      done_key, future = pending.popleft()
      yield done_key, future.result()
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


class TrainTransform(NamedTuple):
  """How a dataset's training examples become a batch.

  element: maps an (image, label) pair (and a numpy generator if `random`) to an element;
  finish: maps the list of a batch's elements to (images, labels);
  finish_for_device: None, or maps them to (images as stored, labels, int32[b, 3] crops)
    for `augment.device_pad_crop_flip(images, crops, pad=device_pad)`, `finish`'s images.
  """
  element: Callable
  random: bool
  finish: Callable
  finish_for_device: Callable | None = None
  device_pad: int | None = None


class TfdsTrainBatches:
  """Training batches of a `TfdsDataset` that depend only on (seed, step); see the module
  docstring for the order and the augmentation draws."""

  def __init__(self, dataset: TfdsDataset, batch_size: int, *, seed: int,
               augment: dict | None = None):
    import grain  # pylint: disable=g-import-not-at-top
    num_examples = dataset.num_train
    batch_size, seed = pipeline.check_batch_args(batch_size, num_examples, seed)
    self.batch_size = batch_size
    self.seed = int(seed)
    self.num_examples = num_examples
    self._steps_per_epoch = num_examples // batch_size
    self._dataset = dataset
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(
        [self.seed, _SEED_SALT]).generate_state(2))
    self._transform = transform = dataset.train_transform(augment)
    # Fixed-size images: the crop and flip can run on the device (`get_for_device`).
    self.device_augment_pad = transform.device_pad
    elements = (grain.MapDataset.source(dataset.train_source).shuffle(seed=shuffle_seed)
                .map(_example_pair))
    if transform.random:
      elements = elements.random_map(transform.element, seed=augment_seed)
    else:
      elements = elements.map(transform.element)
    self._elements = elements
    self._order = grain.MapDataset.range(num_examples).shuffle(seed=shuffle_seed)

  @property
  def steps_per_epoch(self) -> int:
    """N // batch_size."""
    return self._steps_per_epoch

  def positions(self, step: int, rows: slice | None = None) -> np.ndarray:
    """int64[b], the grain element positions of rows `rows` of batch `step`."""
    step = int(step)
    if step < 0:
      raise ValueError(f'step={step} must be >= 0')
    epoch, within = divmod(step, self._steps_per_epoch)
    start = epoch * self.num_examples + within * self.batch_size
    rows = pipeline.check_rows(rows, self.batch_size)
    return start + np.arange(self.batch_size, dtype=np.int64)[rows]

  def indices(self, step: int, rows: slice | None = None) -> np.ndarray:
    """int64[b], the train-split example indices of rows `rows` of batch `step`."""
    return np.asarray([self._order[int(p)] for p in self.positions(step, rows)], np.int64)

  def _batch(self, step: int, rows: slice | None, for_device: bool) -> tuple:
    positions = [int(p) for p in self.positions(step, rows)]
    if not positions:
      empty = (np.zeros((0, *self._dataset.image_shape), np.uint8), np.zeros((0,), np.int32))
      return empty + ((np.zeros((0, 3), np.int32),) if for_device else ())
    finish = self._transform.finish_for_device if for_device else self._transform.finish
    return finish(self._dataset.map_elements(self._elements.__getitem__, positions,
                                             parallel=not self._dataset.cached))

  def get(self, step: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` (None: all) of the batch of `step`: (uint8[b, H, W, C], int32[b])."""
    return self._batch(step, rows, for_device=False)

  def get_for_device(self, step: int, rows: slice | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`get` with the crop and flip left to the device (as `pipeline.TrainBatches`): (images
    as stored, labels, int32[b, 3] crops); only where `device_augment_pad` is not None."""
    if self.device_augment_pad is None:
      raise ValueError(f'{self._dataset.name}: these batches have no crop and flip to leave '
                       'to the device (device_augment_pad is None)')
    return self._batch(step, rows, for_device=True)

  def iterate(self, start_step: int = 0, rows: slice | None = None, *, prefetch: int = 2,
              for_device: bool = False) -> Iterator[tuple]:
    """Yields (step, *get(step, rows)) for step = start_step, ... forever, computing up to
    `prefetch` batches ahead in a background thread; with `for_device`, (step,
    *get_for_device(step, rows))."""
    get = self.get_for_device if for_device else self.get
    steps = iter(range(int(start_step), 2**62))
    for step, batch in _prefetched(lambda s: get(s, rows), steps, prefetch):
      yield (step, *batch)


class TfdsDataset:
  """A tfds dataset read by random access; the interface of `gkt_jax.data` (see there).

  Attributes:
    name, num_classes, image_shape (H, W, C of the model input), mean, std (float32[C], in
    [0, 1] units; the constants of this module), num_train, num_test, data_dir,
    train_source, test_source (the tfds data sources, or `ArraySource`s after `cache()`).
  """

  def __init__(self, name: str, spec: TfdsSpec, train_source, test_source, *, data_dir: str,
               image_size: int | None = None, resize_size: int | None = None,
               num_threads: int | None = None):
    self.name = name
    self.spec = spec
    self.data_dir = data_dir
    self.train_source = train_source
    self.test_source = test_source
    self.num_classes = spec.num_classes
    self.image_size = image_size
    self.resize_size = resize_size
    if spec.kind == 'imagenet':
      self.image_shape = (image_size, image_size, 3)
    else:
      self.image_shape = tuple(spec.image_shape)
    self.mean = np.asarray(spec.mean, np.float32)
    self.std = np.asarray(spec.std, np.float32)
    self.mean.setflags(write=False)
    self.std.setflags(write=False)
    self.num_train = len(train_source)
    self.num_test = len(test_source)
    self.num_threads = (min(16, os.cpu_count() or 1) if num_threads is None
                        else int(num_threads))
    self.cached = False
    self._pool = None

  def __repr__(self):
    return (f'TfdsDataset({self.name!r}, data_dir={self.data_dir!r}, num_train='
            f'{self.num_train}, num_test={self.num_test}, image_shape={self.image_shape})')

  def map_elements(self, fn: Callable[[int], Any], keys: list[int], *,
                   parallel: bool = True) -> list[Any]:
    """[fn(k) for k in keys], on `num_threads` threads if `parallel` (decoding releases the
    GIL; pure-Python work on cached arrays does not, and runs faster serially)."""
    if not parallel or self.num_threads <= 1 or len(keys) <= 1:
      return [fn(k) for k in keys]
    if self._pool is None:
      self._pool = futures.ThreadPoolExecutor(self.num_threads, thread_name_prefix='gkt_data')
    return list(self._pool.map(fn, keys))

  def cache(self) -> None:
    """Decodes both splits into memory once (fixed-size datasets only); the batches are then
    the same, bitwise, and cheaper (no PNG decoding per step)."""
    if self.spec.kind != 'fixed':
      raise ValueError(f'{self.name}: cache=True needs images of one size; '
                       f'{self.name} images vary in size')
    for split in ('train', 'test'):
      source = getattr(self, f'{split}_source')
      if isinstance(source, ArraySource):
        continue
      images = np.empty((len(source), *self.image_shape), np.uint8)
      labels = np.empty((len(source),), np.int32)

      def read(i, source=source, images=images, labels=labels):
        image, labels[i] = _example_pair(source[i])
        images[i] = self._check_shape(image)

      self.map_elements(read, list(range(len(source))))
      images.setflags(write=False)
      labels.setflags(write=False)
      setattr(self, f'{split}_source', ArraySource(images, labels))
    self.cached = True

  def _check_shape(self, image: np.ndarray) -> np.ndarray:
    if image.shape != self.image_shape:
      raise ValueError(f'{self.name}: an image has shape {image.shape}, expected '
                       f'{self.image_shape}')
    return image

  def train_transform(self, augment: dict | None) -> TrainTransform:
    """How training examples are augmented (`TrainTransform`).

    Pad-crop-flip draws its offset and flip per element (`augment.pad_crop_flip_params` with
    B = 1) and applies them to the stacked batch (`augment.apply_pad_crop_flip`, 6x faster
    than one image at a time), or leaves them to the device (`finish_for_device`); the result
    equals `augment.pad_crop_flip(image[None], rng)` per example.
    """
    augment = dict(augment or {})
    allowed = _IMAGENET_AUGMENT_KEYS if self.spec.kind == 'imagenet' else _FIXED_AUGMENT_KEYS
    unknown = sorted(set(augment) - set(allowed))
    if unknown:
      raise ValueError(f'{self.name}: augment has unknown keys {unknown}; allowed: '
                       f'{list(allowed)}')
    flip = bool(augment.get('flip', pipeline.AUGMENT_DEFAULTS.flip))
    if self.spec.kind == 'fixed':
      pad = int(augment.get('pad', pipeline.AUGMENT_DEFAULTS.pad))
      if pad < 0:
        raise ValueError(f'augment pad={pad} must be >= 0')
      if not pad and not flip:
        return TrainTransform(self.eval_transform, False, _stack)

      def draw(pair, rng):
        offsets, flips = augment_lib.pad_crop_flip_params(rng, 1, pad=pad, flip=flip)
        return self._check_shape(pair[0]), pair[1], offsets, flips

      def finish_for_device(elements):
        images, labels = _stack([e[:2] for e in elements])
        offsets = np.concatenate([e[2] for e in elements]) if pad else None
        flips = np.concatenate([e[3] for e in elements]) if flip else None
        return images, labels, augment_lib.crop_table(offsets, flips, len(labels))

      def finish(elements):
        images, labels, crops = finish_for_device(elements)
        return augment_lib.apply_pad_crop_flip(images, crops[:, :2], crops[:, 2] == 1,
                                               pad=pad), labels
      return TrainTransform(draw, True, finish, finish_for_device, pad)
    size = self.image_size
    if augment.get('random_resized_crop', pipeline.AUGMENT_DEFAULTS.random_resized_crop):
      scale = tuple(augment.get('scale', pipeline.AUGMENT_DEFAULTS.scale))
      ratio = tuple(augment.get('ratio', pipeline.AUGMENT_DEFAULTS.ratio))

      def random_resized_crop(pair, rng):
        return augment_lib.random_resized_crop(pair[0], rng, size=size, scale=scale,
                                               ratio=ratio, flip=flip), pair[1]
      return TrainTransform(random_resized_crop, True, _stack)
    if not flip:
      return TrainTransform(self.eval_transform, False, _stack)

    def center_crop_flip(pair, rng):
      image = self.eval_transform(pair)[0]
      return (image[:, ::-1] if rng.random() < 0.5 else image), pair[1]
    return TrainTransform(center_crop_flip, True, _stack)

  def eval_transform(self, pair: tuple[np.ndarray, np.int32]) -> tuple[np.ndarray, np.int32]:
    """The deterministic test-time transform: identity (after a shape check) for fixed-size
    datasets, resize to resize_size + central image_size crop for ImageNet."""
    if self.spec.kind == 'imagenet':
      return augment_lib.resize_center_crop(pair[0], size=self.image_size,
                                            resize_size=self.resize_size), pair[1]
    return self._check_shape(pair[0]), pair[1]

  def train_batches(self, batch_size: int, *, seed: int,
                    augment: dict | None = None) -> TfdsTrainBatches:
    """Training batches (see `TfdsTrainBatches`).

    augment: None, or for cifar10/cifar100/imagenet_resized dict(pad=int, flip=bool)
      (`augment.pad_crop_flip`), for imagenet2012 dict(random_resized_crop=bool, flip=bool,
      scale=(0.08, 1.0), ratio=(3/4, 4/3)) (`augment.random_resized_crop`; without
      random_resized_crop, the eval resize + center crop, then the optional flip). None: no
      augmentation (imagenet2012: the eval transform).
    """
    return TfdsTrainBatches(self, batch_size, seed=seed, augment=augment)

  def eval_batches(self, batch_size: int, *, prefetch: int = 1
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The test split in order, as (images uint8[batch_size, H, W, C], labels
    int32[batch_size], num_valid), the last batch padded (`pipeline.eval_batches`)."""
    return self._eval_batches(self.test_source, range(self.num_test), batch_size, prefetch)

  def train_eval_batches(self, batch_size: int, indices: np.ndarray | None = None, *,
                         prefetch: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """`eval_batches` over the train split (or its examples `indices`, int[n]), in order,
    through the test-time transform: what the training accuracy is measured on."""
    keys = range(self.num_train) if indices is None else [int(i) for i in indices]
    return self._eval_batches(self.train_source, keys, batch_size, prefetch)

  def _eval_batches(self, source, keys, batch_size: int, prefetch: int):
    import grain  # pylint: disable=g-import-not-at-top
    batch_size = int(batch_size)
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1')
    elements = grain.MapDataset.source(source).map(_example_pair).map(self.eval_transform)

    def make(start):
      images, labels = _stack(self.map_elements(elements.__getitem__,
                                                list(keys[start:start + batch_size]),
                                                parallel=not self.cached))
      return pipeline.pad_batch(images, labels, batch_size)

    for _, batch in _prefetched(make, iter(range(0, len(keys), batch_size)), prefetch):
      yield batch


def _image_sizes(name: str, spec, image_size, resize_size) -> tuple[int | None, int | None]:
  """(image_size, resize_size): imagenet2012's model input side and shorter side before
  the evaluation center crop (defaults 224, 256); None for a fixed-size dataset."""
  if spec.kind == 'imagenet':
    image_size = 224 if image_size is None else int(image_size)
    resize_size = 256 if resize_size is None else int(resize_size)
    if not 1 <= image_size <= resize_size:
      raise ValueError(f'{name}: need 1 <= image_size={image_size} <= '
                       f'resize_size={resize_size}')
  elif image_size is not None or resize_size is not None:
    raise ValueError(f'{name}: image_size and resize_size are imagenet2012 options (its '
                     f'images are {spec.image_shape[0]}x{spec.image_shape[1]})')
  return image_size, resize_size


def _check_num_classes(name: str, spec, source, data_dir: str) -> None:
  """The prepared dataset's stored class count (when its info says) is the spec's."""
  features = getattr(getattr(source, 'dataset_info', None), 'features', None)
  if features is not None and 'label' in features:
    stored = features['label'].num_classes
    if stored != spec.num_classes:
      raise ValueError(f'{name} in {data_dir} has {stored} classes, expected '
                       f'{spec.num_classes}')


def load_tfds_dataset(name: str, data_dir: str | None = None, *,
                      num_threads: int | None = None, train_split: str | None = None,
                      test_split: str | None = None, image_size: int | None = None,
                      resize_size: int | None = None, cache: bool = False,
                      train_examples_per_class: int | None = None) -> TfdsDataset:
  """Opens a prepared tfds dataset for random access (nothing is downloaded).

  Args:
    name: a key of TFDS_DATASETS: 'cifar10', 'cifar100' (train 50,000 / test 10,000, 32x32),
      'imagenet2012' (train 1,281,167 / validation 50,000 as test, any size, cropped to
      image_size), 'imagenet_resized/32x32', 'imagenet_resized/64x64' (train 1,281,167 /
      validation 50,000).
    data_dir: the tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    num_threads: threads decoding and augmenting the examples of a batch (default
      os.cpu_count(), at most 16; 0 or 1: the calling thread).
    train_split, test_split: tfds split strings (default 'train' and 'test' or 'validation';
      e.g. 'validation[:1000]' for a quick evaluation).
    image_size: imagenet2012 only: side of the model input (default 224).
    resize_size: imagenet2012 only: shorter side before the evaluation center crop
      (default 256).
    cache: decode both splits into memory when loading (`TfdsDataset.cache`; fixed-size
      datasets only; CIFAR: 180 MB, a few seconds): same batches, no decoding per step.
    train_examples_per_class: None (the whole train split) or n: train on n examples of every
      class (`subsets.class_stratified_indices` of the split's labels, read once with the
      images undecoded); before `cache`, which then decodes only those.

  Raises:
    FileNotFoundError: not prepared in data_dir (one line with the command that prepares it).
    ValueError: unknown name or option, or prepared without random access (TFRecord).
  """
  if name not in TFDS_DATASETS:
    raise ValueError(f'unknown tfds dataset name={name!r}; allowed: {tuple(TFDS_DATASETS)}')
  spec = TFDS_DATASETS[name]
  image_size, resize_size = _image_sizes(name, spec, image_size, resize_size)
  if train_examples_per_class is not None:  # before any label is read
    subsets.check_examples_per_class(train_examples_per_class, name)
  data_dir = os.fspath(data_dir) if data_dir else default_data_dir()
  train_split = train_split or spec.train_split
  train_source = open_source(name, train_split, data_dir)
  test_source = open_source(name, test_split or spec.test_split, data_dir)
  _check_num_classes(name, spec, train_source, data_dir)
  if train_examples_per_class is not None:
    kept = subsets.class_stratified_indices(
        split_labels(name, train_split, data_dir, train_source), train_examples_per_class,
        spec.num_classes, name)
    train_source = SubsetSource(train_source, kept)
  dataset = TfdsDataset(name, spec, train_source, test_source, data_dir=data_dir,
                        image_size=image_size, resize_size=resize_size,
                        num_threads=num_threads)
  if cache:
    dataset.cache()
  return dataset
