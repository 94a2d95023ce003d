"""In-memory image classification datasets (digits, IDX files) and `load_dataset`, which finds
every dataset by name in `DATASETS`: these, Tiny-ImageNet (in memory) and the tfds datasets
(random access from disk). A new dataset is a loader and one `register_dataset` call."""

from collections.abc import Callable
import functools
import os

import numpy as np

from gkt_jax.config import data as data_config
from gkt_jax.data import idx
from gkt_jax.data.arrays import (ArrayDataset, first_test_examples, make_array_dataset,
                                 train_examples_per_class)

# Where `apt-get install dataset-fashion-mnist` (Debian) puts the four gzip'd IDX files.
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
# The names `tfds_data.TFDS_DATASETS` knows, repeated here so that listing them does not
# import tensorflow_datasets and grain (a test checks the two agree).
TFDS_DATASET_NAMES = ('cifar10', 'cifar100', 'imagenet2012', 'imagenet_resized/32x32',
                      'imagenet_resized/64x64')
# name -> load(data_dir, **options) -> a dataset (the interface of gkt_jax.data's docstring);
# filled by `register_dataset` at the end of this module.
DATASETS: dict[str, Callable] = {}


def register_dataset(name: str, load: Callable) -> None:
  """Makes `load_dataset(name, data_dir, **options)` call `load(data_dir, **options)`, and
  `config.data.name=name` a known dataset."""
  DATASETS[name] = load
  if name not in data_config.DATASETS:
    data_config.DATASETS.append(name)
DIGITS_TEST_FRACTION = 0.2
DIGITS_NUM_TRAIN = 1438
DIGITS_NUM_TEST = 359


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
    **options: `train_examples_per_class` (every dataset; None or absent: the whole train
      split): train on a fixed class-stratified subset of the train split, that many
      examples of every class (`subsets.class_stratified_indices`: the same images in every
      run, a smaller subset inside a larger one); the test split stays whole. Dataset-specific
      options are passed on: for tiny_imagenet `num_threads`; for the
      tfds datasets `num_threads`, `train_split`, `test_split`, `cache`, and for
      imagenet2012 `image_size`, `resize_size`; for the in-memory IDX/digits datasets
      `test_examples` (evaluate on the first N test examples only; quick checks).

  Returns:
    An ArrayDataset (digits, fashion_mnist, mnist, tiny_imagenet) or a
    `tfds_data.TfdsDataset`.

  Raises:
    ValueError: unknown name or option, corrupt files, or train_examples_per_class not an
      integer from 1 to the smallest class's count.
    FileNotFoundError: the files are missing, or the tfds dataset is not prepared (one line
      saying how to get or prepare them).
  """
  if name not in DATASETS:
    raise ValueError(f'unknown dataset name={name!r}; allowed: {tuple(DATASETS)}')
  per_class = options.pop('train_examples_per_class', None)
  if name in TFDS_DATASET_NAMES:  # cut before `cache` decodes anything
    return DATASETS[name](data_dir, train_examples_per_class=per_class, **options)
  dataset = DATASETS[name](data_dir, **options)
  if per_class is None:
    return dataset
  return train_examples_per_class(dataset, per_class)


def _in_memory(name: str, data_dir: str | None, **options) -> ArrayDataset:
  """digits, fashion_mnist or mnist; option `test_examples`."""
  unknown = sorted(set(options) - {'test_examples'})
  if unknown:
    raise ValueError(f'{name}: unknown options {unknown}; allowed: [\'test_examples\']')
  return first_test_examples(_load_in_memory(name, data_dir), options.get('test_examples'))


def _load_in_memory(name: str, data_dir: str | None) -> ArrayDataset:
  if name == 'digits':
    return load_digits()
  if name == 'fashion_mnist':
    return load_idx_dataset(name, data_dir or FASHION_MNIST_DIR)
  if not data_dir:  # mnist
    wanted = ', '.join(b + '[.gz]' for b in IDX_FILES.values())
    raise FileNotFoundError(f'mnist: no default directory to look for {wanted} in; '
                            'download them and set --config.data.dir=DIR to their directory '
                            '(`apt-get install dataset-fashion-mnist` gives Fashion-MNIST '
                            'only: use name fashion_mnist)')
  return load_idx_dataset(name, data_dir)


def _tiny_imagenet(data_dir, **options):
  from gkt_jax.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
  return tiny_imagenet.load_tiny_imagenet(data_dir, **options)


def _tfds(name, data_dir, **options):
  """Imported when first loaded: tensorflow_datasets and grain are slow to import."""
  from gkt_jax.data import tfds_data  # pylint: disable=g-import-not-at-top
  return tfds_data.load_tfds_dataset(name, data_dir, **options)


for _name in ('digits', 'fashion_mnist', 'mnist'):
  register_dataset(_name, functools.partial(_in_memory, _name))
register_dataset('tiny_imagenet', _tiny_imagenet)
for _name in TFDS_DATASET_NAMES:
  register_dataset(_name, functools.partial(_tfds, _name))
