"""Tiny-ImageNet (200 classes, 64x64x3) from its usual folder, held in memory.

The folder `tiny-imagenet-200` of http://cs231n.stanford.edu/tiny-imagenet-200.zip:
  wnids.txt                      the 200 WordNet ids, one per line
  train/<wnid>/images/*.JPEG     500 training images per class (100,000)
  val/images/*.JPEG              10,000 validation images (used as the test split)
  val/val_annotations.txt        tab-separated: file name, wnid, bounding box
The unlabelled test/ folder is not read.
"""

from concurrent import futures
import os

import numpy as np
from PIL import Image

from gkt_jax.data import arrays

IMAGE_SHAPE = (64, 64, 3)
URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'


def _missing(what: str) -> FileNotFoundError:
  return FileNotFoundError(
      f'tiny_imagenet: {what}; download {URL}, unzip it and set --config.data.dir=DIR to the '
      'tiny-imagenet-200 folder (it holds wnids.txt, train/<wnid>/images/*.JPEG, val/images/ '
      'and val/val_annotations.txt)')


def _read_image(path: str) -> np.ndarray:
  with Image.open(path) as image:
    array = np.asarray(image.convert('RGB'), np.uint8)
  if array.shape != IMAGE_SHAPE:
    raise ValueError(f'tiny_imagenet: {path} is {array.shape[1]}x{array.shape[0]}, expected '
                     f'{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}')
  return array


def _read_images(paths: list[str], num_threads: int) -> np.ndarray:
  out = np.empty((len(paths), *IMAGE_SHAPE), np.uint8)

  def read(i):
    out[i] = _read_image(paths[i])

  if num_threads <= 1:
    for i in range(len(paths)):
      read(i)
  else:
    with futures.ThreadPoolExecutor(num_threads) as pool:
      for result in pool.map(read, range(len(paths))):
        del result
  return out


def file_lists(data_dir: str) -> tuple[list[str], list[str], np.ndarray, list[str], np.ndarray]:
  """The files and labels of the folder, without reading any image.

  Class c is the c-th WordNet id of wnids.txt in sorted order (as torchvision's ImageFolder
  numbers train/'s class folders). Train files are listed class by class, each class's file
  names sorted; validation files in the order of val/val_annotations.txt.

  Returns:
    (wnids [200], train_paths, train_labels int32[N], test_paths, test_labels int32[M]).

  Raises:
    FileNotFoundError: the folder or a part of it is missing (one line saying where to get it).
    ValueError: an annotation names an unknown class.
  """
  if not data_dir:
    raise _missing('no directory given (data_dir=None)')
  if not os.path.isdir(data_dir):
    raise _missing(f'directory {data_dir} does not exist')
  wnids_path = os.path.join(data_dir, 'wnids.txt')
  annotations_path = os.path.join(data_dir, 'val', 'val_annotations.txt')
  for path in (wnids_path, annotations_path):
    if not os.path.isfile(path):
      raise _missing(f'{path} is missing')
  with open(wnids_path) as f:
    wnids = sorted(line.strip() for line in f if line.strip())
  class_of = {wnid: c for c, wnid in enumerate(wnids)}
  train_paths, train_labels = [], []
  for wnid in wnids:
    folder = os.path.join(data_dir, 'train', wnid, 'images')
    if not os.path.isdir(folder):
      raise _missing(f'{folder} is missing')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(('.jpeg', '.jpg')))
    train_paths.extend(os.path.join(folder, n) for n in names)
    train_labels.extend([class_of[wnid]] * len(names))
  test_paths, test_labels = [], []
  with open(annotations_path) as f:
    for line_number, line in enumerate(f, 1):
      fields = line.split('\t')
      if len(fields) < 2:
        continue
      if fields[1] not in class_of:
        raise ValueError(f'tiny_imagenet: {annotations_path} line {line_number} names class '
                         f'{fields[1]!r}, which is not in {wnids_path}')
      test_paths.append(os.path.join(data_dir, 'val', 'images', fields[0]))
      test_labels.append(class_of[fields[1]])
  for path in test_paths[:1] + test_paths[-1:]:
    if not os.path.isfile(path):
      raise _missing(f'{path} (listed in {annotations_path}) is missing')
  return (wnids, train_paths, np.asarray(train_labels, np.int32), test_paths,
          np.asarray(test_labels, np.int32))


def load_tiny_imagenet(data_dir: str | None, *,
                       num_threads: int | None = None) -> arrays.ArrayDataset:
  """Tiny-ImageNet as an ArrayDataset (name 'tiny_imagenet').

  Reads every image (100,000 train, 10,000 validation = test; 1.4 GB as uint8) with PIL,
  converted to RGB; labels as in `file_lists`; mean/std computed from the train images.

  Args:
    data_dir: the tiny-imagenet-200 folder.
    num_threads: threads decoding JPEGs (default: os.cpu_count(), at most 16).

  Raises:
    FileNotFoundError: the folder or a part of it is missing (one line saying where to get it).
    ValueError: an image is not 64x64, or an annotation names an unknown class.
  """
  wnids, train_paths, train_labels, test_paths, test_labels = file_lists(data_dir)
  if num_threads is None:
    num_threads = min(16, os.cpu_count() or 1)
  return arrays.make_array_dataset(
      'tiny_imagenet', _read_images(train_paths, num_threads), train_labels,
      _read_images(test_paths, num_threads), test_labels, len(wnids))
