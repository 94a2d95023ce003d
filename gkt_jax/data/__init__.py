"""Datasets, augmentation and batching, behind one interface.

`load_dataset(name, data_dir=None, **options) -> Dataset`, name in `DATASETS`:
  in memory (`ArrayDataset`): 'digits', 'fashion_mnist', 'mnist', 'tiny_imagenet';
  random access from tfds ArrayRecord files read with grain (`tfds_data.TfdsDataset`):
  'cifar10', 'cifar100', 'imagenet2012', 'imagenet_resized/32x32', 'imagenet_resized/64x64'.
  Options: every dataset `train_examples_per_class` (train on a fixed class-stratified
  subset: `class_stratified_indices`); tiny_imagenet `num_threads`; tfds datasets
  `num_threads`, `train_split`, `test_split`, `cache` (decode into memory once; not
  imagenet2012), imagenet2012 also `image_size` (224), `resize_size` (256). A dataset that is
  missing or not prepared raises FileNotFoundError (ValueError for a TFRecord-only tfds copy)
  with one line naming the dataset and directory and saying how to get or prepare it.

Every dataset object (`interface.Dataset`) has:
  name: str, as given to load_dataset.
  num_classes: int.
  image_shape: (H, W, C) of the model input (every batch has it).
  mean, std: float32[C], per-channel statistics of the train images in [0, 1] units; the
    model input is (images / 255 - mean) / std (`normalize`; the trainer does it on device).
  num_train, num_test: int, examples in the train and test splits.
  train_batches(batch_size, *, seed, augment=None) -> batches (`interface.TrainBatchSource`):
    batches.steps_per_epoch: int, N // batch_size (each epoch drops its last N % B).
    batches.get(step, rows=None) -> (images uint8[b, H, W, C], labels int32[b]): rows
      `rows` (a slice of range(batch_size); None: all, b = batch_size) of global batch
      `step`. The batch is a function of (seed, step) only (order and augmentation), so
      resuming at step s needs only s, and `get(step, rows)` equals `get(step)[rows]`
      bitwise. Multi-host: process p of P reads rows=process_rows(B, p, P), i.e.
      slice(p * B // P, (p + 1) * B // P), and only those rows are read and decoded.
    batches.iterate(start_step=0, rows=None) -> yields (step, images, labels) forever
      (the tfds batches compute a few steps ahead in a background thread).
    Pad-crop-flip batches (in memory: `TrainBatches`; fixed-size tfds datasets:
    `TfdsTrainBatches`) can also leave the crop and flip to the device: `device_augment_pad`
    (the pad, or None when there is nothing to leave), `get_for_device(step, rows)` ->
    (images as stored, labels, int32[b, 3] crops) and `iterate(..., for_device=True)`;
    `device_pad_crop_flip(images, crops, pad=...)` (jax) then gives `get`'s images bitwise.
    The trainer does this whenever `device_augment_pad` is not None.
    augment: None (no augmentation) or a dict; dict(pad=int, flip=bool) for every dataset
      except imagenet2012, which takes dict(random_resized_crop=bool, flip=bool,
      scale=(0.08, 1.0), ratio=(3/4, 4/3)) (see `TfdsDataset.train_batches`).
  eval_batches(batch_size) -> iterator of (images uint8[batch_size, H, W, C],
    labels int32[batch_size], num_valid): the whole test split in order, every batch of
    exactly batch_size rows; only the last may be padded, after its num_valid real rows,
    with zero images and label 0 (imagenet2012: resized to resize_size and center-cropped).
  train_eval_batches(batch_size, indices=None) -> the same over the train split (or its
    examples `indices`, int[n], e.g. `train_sample(num_train, n)`), in order, with the
    test-time transform: what the training accuracy is measured on.
A fixed set of training images (e.g. for BatchNorm recalibration) is
`train_batches(n, seed=s).get(0)`. `ArrayDataset` also keeps its arrays (`train_images`,
`train_labels`, `test_images`, `test_labels`); the tfds datasets do not hold their data.

Helpers: `normalize` (numpy or jax), `pad_crop_flip` (numpy), `device_pad_crop_flip` (jax),
`TrainBatches` (the in-memory batches), `eval_batches` (the in-memory eval batches).
"""

from gkt_jax.data.arrays import ArrayDataset
from gkt_jax.data.augment import device_pad_crop_flip
from gkt_jax.data.augment import normalize
from gkt_jax.data.augment import pad_crop_flip
from gkt_jax.data.idx import DataError
from gkt_jax.data.idx import read_idx
from gkt_jax.data.interface import Dataset
from gkt_jax.data.interface import TrainBatchSource
from gkt_jax.data.pipeline import eval_batches
from gkt_jax.data.pipeline import process_rows
from gkt_jax.data.pipeline import TrainBatches
from gkt_jax.data.sources import DATASETS
from gkt_jax.data.sources import digits_split_indices
from gkt_jax.data.sources import FASHION_MNIST_DIR
from gkt_jax.data.sources import load_dataset
from gkt_jax.data.subsets import class_stratified_indices
from gkt_jax.data.subsets import train_sample

__all__ = [
    'ArrayDataset', 'DATASETS', 'DataError', 'Dataset', 'FASHION_MNIST_DIR', 'TrainBatchSource',
    'TrainBatches', 'class_stratified_indices', 'device_pad_crop_flip', 'digits_split_indices',
    'eval_batches', 'load_dataset', 'normalize', 'pad_crop_flip', 'process_rows', 'read_idx',
    'train_sample'
]
