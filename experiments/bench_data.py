r"""Images per second of each input pipeline with nothing training, against the fastest
training step of the same dataset, measured in the same run.

  python -m experiments.bench_data --datasets digits,fashion_mnist --batches 200
  python -m experiments.bench_data --datasets cifar10 --data_dir ~/tensorflow_datasets

Each dataset's batches come from its baseline config (`experiments/configs/<dataset>.py:
method=baseline`: batch size, augmentation, options). One JSON line per (dataset, pipeline):
  pipeline               'host': `batches.iterate` with every transform on the host, put on
                         the device (the trainer's input where nothing is left to the
                         device: ImageNet's random-resized crops, no augmentation);
                         'device': pad-crop-flip batches (in memory, CIFAR, ImageNet 32/64)
                         as the trainer feeds them: rows gathered and decoded on the host
                         (`iterate(for_device=True)`), put on the device, cropped and flipped
                         there (`device_pad_crop_flip`, jitted) until the batch is ready on
                         the device; 'device_host_part': the same without the crop, i.e. the
                         host's share when the device is an accelerator (on a CPU-only
                         machine the 'device' crop runs on the same cores)
  images_per_second      batch x batches / seconds, after `--warmup` batches
  train_images_per_second the plain (baseline) step of the config's network at the same
                         batch and image shape (`bench_step.bench_method`): the fastest step
                         of any method on that dataset
  ratio                  images_per_second / train_images_per_second (the input keeps up
                         with training at >= 10)
"""

from __future__ import annotations

import json
import time

from absl import app, flags
import jax

from experiments import bench_step, cli
from experiments.configs import common
from gkt_jax import data as data_lib

_DATASETS = flags.DEFINE_list('datasets', ['digits', 'fashion_mnist'],
                              'Dataset names with a baseline config.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data directory (default: the dataset\'s).')
_BATCHES = flags.DEFINE_integer('batches', 200, 'Timed batches per pipeline.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed batches first (compilation, threads).')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 5, 'Timed training steps.')


def _time_batches(iterator, steps: int, warmup: int, finish) -> float:
  """Seconds for `steps` batches of `iterator` (each passed through `finish` and waited for)
  after `warmup` untimed ones."""
  for _ in range(warmup):
    jax.block_until_ready(finish(next(iterator)[1:]))  # (images, labels[, crops])
  start = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(finish(next(iterator)[1:]))
  return time.perf_counter() - start


def bench_dataset(name: str, data_dir: str | None, steps: int, warmup: int,
                  train_steps: int) -> list[dict]:
  config = common.get_config('baseline', name, None)
  section = config.data
  dataset = data_lib.load_dataset(name, data_dir=data_dir or section.get('dir'),
                                  **dict(section.get('options', None) or {}))
  batch = int(section.batch_size)
  augment = dict(section.get('augment', {}) or {}) or None
  batches = dataset.train_batches(batch, seed=0, augment=augment)
  rates = {'host': batch * steps / _time_batches(batches.iterate(0), steps, warmup,
                                                 jax.device_put)}
  pad = getattr(batches, 'device_augment_pad', None)
  if pad is not None:  # a crop and flip the trainer leaves to the device
    crop = jax.jit(data_lib.device_pad_crop_flip, static_argnames='pad')

    def on_device(arrays):
      images, labels, crops = jax.device_put(arrays)
      return (images if crops is None else crop(images, crops, pad=pad)), labels

    for pipeline, finish in (('device_host_part', jax.device_put), ('device', on_device)):
      seconds = _time_batches(batches.iterate(0, for_device=True), steps, warmup, finish)
      rates[pipeline] = batch * steps / seconds
  height, width, channels = dataset.image_shape
  if height != width:
    raise ValueError(f'{name}: bench_step times square images, got {height}x{width}')
  model = config.model
  train = bench_step.bench_method(
      'baseline', model.arch, batch, train_steps, height, model.get('conv_impl', 'auto'),
      model.get('width_multiplier', 1.0), channels, shortcut=model.get('shortcut'),
      num_classes=dataset.num_classes)['images_per_second']
  return [{'dataset': name, 'pipeline': pipeline, 'batch': batch, 'augment': augment,
           'images_per_second': rate, 'train_images_per_second': train,
           'ratio': rate / train, 'backend': jax.default_backend()}
          for pipeline, rate in rates.items()]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  for name in _DATASETS.value:
    for row in bench_dataset(name, _DATA_DIR.value, _BATCHES.value, _WARMUP.value,
                             _TRAIN_STEPS.value):
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
