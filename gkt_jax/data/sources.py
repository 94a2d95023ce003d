"""In-memory image classification datasets (digits, IDX files) and `load_dataset`, which also
dispatches to Tiny-ImageNet (in memory) and the tfds datasets (random access from disk)."""

from collections.abc import Iterator
import dataclasses
import os

import numpy as np

from gkt_jax.data import idx
from gkt_jax.data import pipeline

# Where `apt-get install dataset-fashion-mnist` (Debian) puts the four gzip'd IDX files.
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
IN_MEMORY_DATASETS = ('digits', 'fashion_mnist', 'mnist', 'tiny_imagenet')
# The names `tfds_data.TFDS_DATASETS` knows, repeated here so that listing them does not
# import tensorflow_datasets and grain (a test checks the two agree).
TFDS_DATASET_NAMES = ('cifar10', 'cifar100', 'imagenet2012', 'imagenet_resized/32x32',
                      'imagenet_resized/64x64')
DATASETS = IN_MEMORY_DATASETS + TFDS_DATASET_NAMES
DIGITS_TEST_FRACTION = 0.2
DIGITS_NUM_TRAIN = 1438
DIGITS_NUM_TEST = 359


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


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The fixed stratified split of the digits dataset, as indices into `labels`.

  One generator `np.random.default_rng(0)` draws, for class 0, 1, ... in turn, a permutation
  of that class's indices (ascending order before permuting); the first
  round(0.2 * class size) of it go to test, the rest to train.

  Args:
    labels: int[N], the class of each example.

  Returns:
    (train_indices int64[N - M], test_indices int64[M]), each sorted ascending.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(0)
  train, test = [], []
  for cls in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == cls))
    num_test = int(round(DIGITS_TEST_FRACTION * len(members)))
    test.append(members[:num_test])
    train.append(members[num_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits() -> ArrayDataset:
  """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

  Pixel values 0..16 become uint8 round(v * 255 / 16); images are uint8[N, 8, 8, 1], 10
  classes. Split by `digits_split_indices`: 1,438 train and 359 test images (per class
  0..9, test 36, 36, 35, 37, 36, 36, 36, 36, 35, 36).
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train, test = digits_split_indices(labels)
  return make_array_dataset('digits', images[train], labels[train], images[test], labels[test],
                            10)


def _find_idx_files(name: str, data_dir: str) -> dict[str, str]:
  """Paths of the four IDX files in data_dir (plain name preferred over `.gz`)."""
  found, missing = {}, []
  for key, base in IDX_FILES.items():
    for candidate in (base, base + '.gz'):
      path = os.path.join(data_dir, candidate)
      if os.path.isfile(path):
        found[key] = path
        break
    else:
      missing.append(base + '[.gz]')
  if missing:
    where = (f'directory {data_dir} does not exist' if not os.path.isdir(data_dir)
             else f'{data_dir} lacks {", ".join(missing)}')
    wanted = ', '.join(b + '[.gz]' for b in IDX_FILES.values())
    if name == 'fashion_mnist':
      how = (f'run `apt-get install dataset-fashion-mnist` (installs them in '
             f'{FASHION_MNIST_DIR}) or set --config.data.dir=DIR to a directory holding them')
    else:
      how = (f'download the {name} IDX files and set --config.data.dir=DIR to their directory '
             '(`apt-get install dataset-fashion-mnist` gives Fashion-MNIST only)')
    raise FileNotFoundError(f'{name}: looked for {wanted} in {data_dir}, but {where}; {how}')
  return found


def load_idx_dataset(name: str, data_dir: str, num_classes: int = 10) -> ArrayDataset:
  """An MNIST-family dataset from the four standard IDX files in `data_dir`.

  Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
  t10k-labels-idx1-ubyte, each either plain or with a `.gz` suffix. Images become
  uint8[N, H, W, 1], labels int32[N].

  Raises:
    FileNotFoundError: the directory or one of the files is missing (one-line message).
    DataError (a ValueError): a file is not valid IDX, or the files do not fit together.
  """
  paths = _find_idx_files(name, data_dir)
  arrays = {}
  for key, path in paths.items():
    ndim = 3 if key.endswith('images') else 1
    array = idx.read_idx(path, expected_ndim=ndim)
    if array.dtype != np.uint8:
      raise idx.DataError(f'{path}: IDX data type is {array.dtype}, expected uint8 (0x08)')
    arrays[key] = array
  for split in ('train', 'test'):
    num_images = len(arrays[f'{split}_images'])
    num_labels = len(arrays[f'{split}_labels'])
    if num_images != num_labels:
      raise idx.DataError(f'{name}: {paths[f"{split}_images"]} holds {num_images} images but '
                       f'{paths[f"{split}_labels"]} holds {num_labels} labels')
    if num_labels and arrays[f'{split}_labels'].max() >= num_classes:
      raise idx.DataError(f'{name}: {paths[f"{split}_labels"]} has label '
                       f'{arrays[f"{split}_labels"].max()}, expected < {num_classes}')
  return make_array_dataset(name, arrays['train_images'][..., None], arrays['train_labels'],
               arrays['test_images'][..., None], arrays['test_labels'], num_classes)


def load_dataset(name: str, data_dir: str | None = None, **options):
  """Loads a dataset by name; every result has the interface in `gkt_jax.data`'s docstring.

  Args:
    name: one of `DATASETS`:
      'digits' (scikit-learn's 8x8 digits, bundled; data_dir is ignored;
      1,438 train / 359 test, see `load_digits`);
      'fashion_mnist' (IDX files; data_dir defaults to /usr/share/datasets/fashion-mnist,
      where `apt-get install dataset-fashion-mnist` puts them; 60,000 / 10,000 28x28x1
      images); 'mnist' (IDX files; data_dir required);
      'tiny_imagenet' (data_dir: the tiny-imagenet-200 folder; see
      `tiny_imagenet.load_tiny_imagenet`);
      'cifar10', 'cifar100', 'imagenet2012', 'imagenet_resized/32x32',
      'imagenet_resized/64x64' (tfds ArrayRecord copies in data_dir, default the tfds data
      dir; see `tfds_data.load_tfds_dataset`).
    data_dir: where the files are.
    **options: dataset-specific options, passed on: for tiny_imagenet `num_threads`; for the
      tfds datasets `num_threads`, `train_split`, `test_split`, `cache`, and for
      imagenet2012 `image_size`, `resize_size`; for the in-memory IDX/digits datasets
      `test_examples` (evaluate on the first N test examples only; quick checks).

  Returns:
    An ArrayDataset (digits, fashion_mnist, mnist, tiny_imagenet) or a
    `tfds_data.TfdsDataset`.

  Raises:
    ValueError: unknown name or option, or corrupt files.
    FileNotFoundError: the files are missing, or the tfds dataset is not prepared (one line
      saying how to get or prepare them).
  """
  if name in TFDS_DATASET_NAMES:
    from gkt_jax.data import tfds_data  # pylint: disable=g-import-not-at-top
    return tfds_data.load_tfds_dataset(name, data_dir, **options)
  if name == 'tiny_imagenet':
    from gkt_jax.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
    return tiny_imagenet.load_tiny_imagenet(data_dir, **options)
  if name not in IN_MEMORY_DATASETS:
    raise ValueError(f'unknown dataset name={name!r}; allowed: {DATASETS}')
  unknown = sorted(set(options) - {'test_examples'})
  if unknown:
    raise ValueError(f'{name}: unknown options {unknown}; allowed: [\'test_examples\']')
  return first_test_examples(_load_in_memory(name, data_dir), options.get('test_examples'))


def first_test_examples(dataset: ArrayDataset, count: int | None) -> ArrayDataset:
  """`dataset` evaluated on its first `count` test examples only (None: all of them)."""
  if count is None:
    return dataset
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise ValueError(f'{dataset.name}: test_examples={count!r} must be an integer >= 1')
  return dataclasses.replace(dataset, test_images=dataset.test_images[:count],
                             test_labels=dataset.test_labels[:count])


def _load_in_memory(name: str, data_dir: str | None) -> ArrayDataset:
  if name == 'digits':
    return load_digits()
  if name == 'fashion_mnist':
    return load_idx_dataset(name, data_dir or FASHION_MNIST_DIR)
  if name == 'mnist':
    if not data_dir:
      wanted = ', '.join(b + '[.gz]' for b in IDX_FILES.values())
      raise FileNotFoundError(f'mnist: no default directory to look for {wanted} in; '
                              'download them and set --config.data.dir=DIR to their directory '
                              '(`apt-get install dataset-fashion-mnist` gives Fashion-MNIST '
                              'only: use name fashion_mnist)')
    return load_idx_dataset(name, data_dir)
  raise AssertionError(name)
