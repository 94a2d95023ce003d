"""Tests for gkt_jax.data.tfds_data: tfds data sources read with grain.

Two kinds of fake data, neither downloads anything:
- `tfds.testing.mock_data(num_examples=N, policy=MockPolicy.USE_CODE)` does mock
  `tfds.data_source` (tfds 4.9.10): it patches `DatasetBuilder.as_data_source`, which
  data_source calls, so every name gets a real `ArrayRecordDataSource` over a MagicMock reader
  serving N random examples per split (the same examples in every split, example i seeded by
  i) with the dataset's real features (imagenet2012: images of random sizes 5..49); it also
  ignores data_dir and makes `download_and_prepare` a no-op. Deserialisation is bypassed: the
  examples are never encoded.
- A real ArrayRecord copy named cifar10, written by a builder with cifar10's features from
  PIL-encoded images (`_write_fake_cifar10`): the unmocked `tfds.data_source` then reads and
  decodes files exactly as for prepared data, without TensorFlow.
"""

import json
import os
import shutil
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from experiments.configs import common
from gkt_jax import data
from gkt_jax.data import augment
from gkt_jax.data import sources
from gkt_jax.data import tfds_data
from gkt_jax.train import train_and_evaluate

tfds.disable_progress_bar()

NUM_EXAMPLES = 37  # Mocked examples per split; 37 % 8 = 5 are dropped per epoch.
_SMALL = ('cifar10', 'cifar100', 'imagenet_resized/32x32', 'imagenet_resized/64x64')
_AUGMENT = {name: dict(pad=4, flip=True) for name in _SMALL}
_AUGMENT['imagenet2012'] = dict(random_resized_crop=True, flip=True)
# Small ImageNet crops keep the tests fast; the transforms are the same at 224.
_IMAGENET_OPTIONS = dict(image_size=24, resize_size=28)


def _load(name, **options):
  if name == 'imagenet2012':
    options = dict(_IMAGENET_OPTIONS, **options)
  return data.load_dataset(name, data_dir='/nonexistent/tfds', **options)


class MockedTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                                              policy=tfds.testing.MockPolicy.USE_CODE))

  @parameterized.parameters(*tfds_data.TFDS_DATASETS)
  def test_interface_shapes_dtypes_labels(self, name):
    ds = _load(name)
    spec = tfds_data.TFDS_DATASETS[name]
    self.assertIsInstance(ds, data.Dataset)
    self.assertEqual(ds.name, name)
    self.assertEqual(ds.num_classes, spec.num_classes)
    self.assertEqual((ds.num_train, ds.num_test), (NUM_EXAMPLES, NUM_EXAMPLES))
    expected_shape = spec.image_shape or (24, 24, 3)
    self.assertEqual(ds.image_shape, expected_shape)
    self.assertEqual(ds.mean.dtype, np.float32)
    self.assertEqual(ds.mean.shape, (3,))
    self.assertTrue(np.all((ds.std > 0.2) & (ds.std < 0.3)))
    batches = ds.train_batches(8, seed=0, augment=_AUGMENT[name])
    self.assertIsInstance(batches, data.TrainBatchSource)
    self.assertEqual(batches.steps_per_epoch, NUM_EXAMPLES // 8)
    images, labels = batches.get(5)
    self.assertEqual(images.shape, (8, *expected_shape))
    self.assertEqual(images.dtype, np.uint8)
    self.assertEqual(labels.dtype, np.int32)
    self.assertTrue(np.all((labels >= 0) & (labels < ds.num_classes)))
    # Labels are those of the examples the batch says it holds.
    expected = [int(ds.train_source[int(i)]['label']) for i in batches.indices(5)]
    np.testing.assert_array_equal(labels, expected)
    for eval_images, eval_labels, _ in ds.eval_batches(16):
      self.assertEqual(eval_images.shape, (16, *expected_shape))
      self.assertEqual(eval_images.dtype, np.uint8)
      self.assertEqual(eval_labels.dtype, np.int32)

  @parameterized.parameters(*tfds_data.TFDS_DATASETS)
  def test_rows_equal_the_full_batch_rows(self, name):
    ds = _load(name, num_threads=4)
    batches = ds.train_batches(8, seed=3, augment=_AUGMENT[name])
    serial = _load(name, num_threads=0).train_batches(8, seed=3, augment=_AUGMENT[name])
    for step in (0, 6):  # Epochs 0 and 1.
      images, labels = batches.get(step)
      np.testing.assert_array_equal(serial.get(step)[0], images)  # Threads change nothing.
      for rows in (slice(0, 4), slice(4, 8), slice(2, 4), slice(7, 8), slice(0, 8, 3)):
        part_images, part_labels = batches.get(step, rows)
        np.testing.assert_array_equal(part_images, images[rows])
        np.testing.assert_array_equal(part_labels, labels[rows])
        np.testing.assert_array_equal(batches.indices(step, rows), batches.indices(step)[rows])

  @parameterized.parameters('cifar10', 'imagenet2012')
  def test_deterministic_in_seed_and_step(self, name):
    first = _load(name).train_batches(8, seed=11, augment=_AUGMENT[name])
    reference = {step: first.get(step) for step in range(9)}
    # A fresh object, steps visited in a scrambled order: the same batches.
    again = _load(name).train_batches(8, seed=11, augment=_AUGMENT[name])
    for step in np.random.default_rng(0).permutation(9):
      np.testing.assert_array_equal(again.get(step)[0], reference[step][0])
      np.testing.assert_array_equal(again.get(step)[1], reference[step][1])
    # Resuming the prefetching iterator mid-way gives the same batches.
    for step, images, labels in again.iterate(start_step=4):
      np.testing.assert_array_equal(images, reference[step][0])
      np.testing.assert_array_equal(labels, reference[step][1])
      if step == 8:
        break
    # Different steps, and different seeds, differ.
    self.assertFalse(np.array_equal(reference[0][0], reference[1][0]))
    other = _load(name).train_batches(8, seed=12, augment=_AUGMENT[name])
    self.assertFalse(np.array_equal(other.get(0)[0], reference[0][0]))

  def test_each_epoch_visits_a_new_permutation(self):
    batches = _load('cifar10').train_batches(8, seed=5)
    per_epoch = batches.steps_per_epoch
    orders = []
    for epoch in range(3):
      seen = np.concatenate([batches.indices(s) for s in range(epoch * per_epoch,
                                                               (epoch + 1) * per_epoch)])
      self.assertLen(seen, per_epoch * 8)
      self.assertLen(set(seen.tolist()), per_epoch * 8)
      self.assertTrue(np.all((seen >= 0) & (seen < NUM_EXAMPLES)))
      orders.append(seen)
    self.assertFalse(np.array_equal(orders[0], orders[1]))
    self.assertFalse(np.array_equal(orders[1], orders[2]))

  def test_no_augmentation_returns_the_stored_images(self):
    ds = _load('cifar10')
    batches = ds.train_batches(8, seed=0)
    images, _ = batches.get(2)
    stored = np.stack([ds.train_source[int(i)]['image'] for i in batches.indices(2)])
    np.testing.assert_array_equal(images, stored)

  def test_pad_crop_flip_per_example(self):
    ds = _load('cifar10')
    batches = ds.train_batches(8, seed=0, augment=dict(pad=4, flip=True))
    found = set()
    for step in range(4):
      images, _ = batches.get(step)
      for image, index in zip(images, batches.indices(step)):
        padded = np.pad(ds.train_source[int(index)]['image'], ((4, 4), (4, 4), (0, 0)))
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(image, padded[dy:dy + 32, dx:dx + 32][:, ::-1] if f
                                     else padded[dy:dy + 32, dx:dx + 32])]
        self.assertNotEmpty(matches)
        found.update(matches)
    self.assertGreater(len({m[:2] for m in found}), 10)  # Offsets vary per example.
    self.assertLen({m[2] for m in found}, 2)  # Both flipped and unflipped occur.

  def test_device_augmentation_gives_the_host_images(self):
    ds = _load('cifar10')
    batches = ds.train_batches(8, seed=3, augment=dict(pad=4, flip=True))
    self.assertEqual(batches.device_augment_pad, 4)
    crop = jax.jit(data.device_pad_crop_flip, static_argnames='pad')
    for step, rows in ((0, None), (5, slice(2, 7)), (9, slice(3, 3))):
      want_images, want_labels = batches.get(step, rows)
      raw, labels, crops = batches.get_for_device(step, rows)
      np.testing.assert_array_equal(labels, want_labels)
      self.assertEqual(crops.shape, (len(labels), 3))
      np.testing.assert_array_equal(crop(raw, crops, pad=4), want_images)
    step, raw, labels, crops = next(batches.iterate(5, slice(2, 7), for_device=True))
    self.assertEqual(step, 5)
    np.testing.assert_array_equal(crop(raw, crops, pad=4), batches.get(5, slice(2, 7))[0])
    # No crop or flip to move (and ImageNet's random-resized crops stay on the host).
    for plain in (ds.train_batches(8, seed=3), _load('imagenet2012').train_batches(
        8, seed=3, augment=_AUGMENT['imagenet2012'])):
      self.assertIsNone(plain.device_augment_pad)
      with self.assertRaisesRegex(ValueError, 'no crop and flip to leave to the device'):
        plain.get_for_device(0)

  def test_trainer_runs_cifar_with_the_crop_on_the_device(self):
    config = common.get_config('baseline', 'cifar10', None)
    config.model.arch = 'resnet8'
    config.data.batch_size, config.data.eval_batch_size = 8, 16
    config.total_epochs, config.eval_every_epochs, config.log_every_epochs = None, None, None
    config.total_steps, config.eval_every_steps, config.log_every_steps = 3, 3, 1
    config.evals = {'full': {'type': 'full'}}
    config.verbose, config.plots = False, False
    self.assertEqual(dict(config.data.augment), dict(pad=4, flip=True))
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(config, workdir)
    self.assertEqual(summary['steps'], 3)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      losses = [json.loads(line)['loss'] for line in f if '"loss"' in line]
    self.assertLen(losses, 3)
    self.assertTrue(np.all(np.isfinite(losses)))

  @parameterized.parameters(*tfds_data.TFDS_DATASETS)
  def test_eval_batches_cover_the_test_split_once(self, name):
    ds = _load(name)
    out = list(ds.eval_batches(16))
    self.assertEqual([n for _, _, n in out], [16, 16, NUM_EXAMPLES - 32])
    images = np.concatenate([b[0][:b[2]] for b in out])
    labels = np.concatenate([b[1][:b[2]] for b in out])
    stored = [ds.test_source[i] for i in range(NUM_EXAMPLES)]
    np.testing.assert_array_equal(labels, [int(s['label']) for s in stored])
    if name == 'imagenet2012':
      expected = [augment.resize_center_crop(s['image'], **{
          'size': 24, 'resize_size': 28}) for s in stored]
    else:
      expected = [s['image'] for s in stored]
    np.testing.assert_array_equal(images, np.stack(expected))
    self.assertFalse(np.any(out[-1][0][NUM_EXAMPLES - 32:]))  # Padding: zero images, label 0.
    self.assertFalse(np.any(out[-1][1][NUM_EXAMPLES - 32:]))

  def test_imagenet_center_crop_flip_without_random_resized_crop(self):
    ds = _load('imagenet2012')
    batches = ds.train_batches(8, seed=0, augment=dict(flip=True))
    images, _ = batches.get(0)
    flipped = 0
    for image, index in zip(images, batches.indices(0)):
      center = augment.resize_center_crop(ds.train_source[int(index)]['image'], size=24,
                                          resize_size=28)
      self.assertTrue(np.array_equal(image, center) or np.array_equal(image, center[:, ::-1]))
      flipped += not np.array_equal(image, center)
    self.assertBetween(flipped, 1, 7)

  @parameterized.parameters('cifar100', 'imagenet_resized/64x64')
  def test_cache_gives_the_same_batches(self, name):
    streamed = _load(name).train_batches(8, seed=1, augment=_AUGMENT[name])
    cached_ds = _load(name, cache=True)
    self.assertIsInstance(cached_ds.train_source, tfds_data.ArraySource)
    cached = cached_ds.train_batches(8, seed=1, augment=_AUGMENT[name])
    for step in (0, 4, 9):
      for got, expected in zip(cached.get(step), streamed.get(step)):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(cached_ds.eval_batches(16), _load(name).eval_batches(16)):
      np.testing.assert_array_equal(got[0], expected[0])
      np.testing.assert_array_equal(got[1], expected[1])

  @parameterized.parameters(False, True)
  def test_train_examples_per_class(self, cache):
    full = _load('cifar10')
    labels = np.array([int(full.train_source[i]['label']) for i in range(full.num_train)])
    ds = _load('cifar10', train_examples_per_class=1, cache=cache)
    kept = data.class_stratified_indices(labels, 1, 10)
    self.assertEqual((ds.num_train, ds.num_test), (10, NUM_EXAMPLES))
    self.assertEqual(sorted(labels[kept]), list(range(10)))
    batches = ds.train_batches(5, seed=3)
    self.assertEqual(batches.steps_per_epoch, 2)
    images, batch_labels = batches.get(1)
    for image, label, index in zip(images, batch_labels, kept[batches.indices(1)]):
      np.testing.assert_array_equal(image, full.train_source[int(index)]['image'])
      self.assertEqual(label, labels[index])
    out = list(ds.train_eval_batches(4))
    self.assertEqual([n for _, _, n in out], [4, 4, 2])
    np.testing.assert_array_equal(np.concatenate([b[1][:b[2]] for b in out]), labels[kept])
    smallest = int(np.argmin(np.bincount(labels, minlength=10)))
    with self.assertRaisesRegex(ValueError, rf'cifar10: train_examples_per_class=20 is more '
                                rf'than class {smallest} has'):
      _load('cifar10', train_examples_per_class=20)
    with self.assertRaisesRegex(ValueError, 'train_examples_per_class=0 must be an integer'):
      _load('cifar10', train_examples_per_class=0)

  def test_bad_options(self):
    with self.assertRaisesRegex(ValueError, r"unknown keys \['crop'\]"):
      _load('cifar10').train_batches(8, seed=0, augment=dict(crop=2))
    with self.assertRaisesRegex(ValueError, 'imagenet2012 options'):
      _load('cifar10', image_size=24)
    with self.assertRaisesRegex(ValueError, 'batch_size=38 is larger than the 37'):
      _load('cifar10').train_batches(38, seed=0)
    with self.assertRaisesRegex(ValueError, 'imagenet2012 images vary in size'):
      _load('imagenet2012', cache=True)
    with self.assertRaisesRegex(TypeError, 'must be a slice'):
      _load('cifar10').train_batches(8, seed=0).get(0, [0, 1])


class NamesTest(absltest.TestCase):

  def test_sources_lists_the_tfds_names(self):
    self.assertEqual(sources.TFDS_DATASET_NAMES, tuple(tfds_data.TFDS_DATASETS))
    self.assertContainsSubset(tfds_data.TFDS_DATASETS, data.DATASETS)
    self.assertIn('tiny_imagenet', data.DATASETS)


class UnpreparedTest(parameterized.TestCase):

  @parameterized.parameters('cifar10', 'cifar100', 'imagenet2012', 'imagenet_resized/32x32')
  def test_one_line_error_with_the_prepare_command(self, name):
    data_dir = os.path.join(self.create_tempdir().full_path, 'tfds')
    with self.assertRaises(FileNotFoundError) as caught:
      data.load_dataset(name, data_dir=data_dir)
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertStartsWith(message, f'{name}: not prepared in data_dir={data_dir} ')
    self.assertIn(f'tfds build {name} --file_format=array_record --data_dir={data_dir}',
                  message)
    self.assertIn('pip install tensorflow-cpu', message)
    if name == 'imagenet2012':
      self.assertIn(f'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
                    f'https://image-net.org in {data_dir}/downloads/manual/', message)
    self.assertFalse(os.path.exists(data_dir))  # Nothing was created (or downloaded).


class FakeCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """cifar10's name, version and features; examples from `examples` (PIL images)."""
  name = 'cifar10'
  VERSION = tfds.core.Version('3.0.2')
  examples = {}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'id': tfds.features.Text(),
        'image': tfds.features.Image(shape=(32, 32, 3)),
        'label': tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self.examples}

  def _generate_examples(self, split):
    images, labels = self.examples[split]
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'id': f'{split}_{i}', 'image': Image.fromarray(image), 'label': int(label)}


def _write_fake_cifar10(data_dir, num_train=20, num_test=7, cycle_labels=False):
  """Random images and labels (cycle_labels: label i % 10 for example i)."""
  rng = np.random.default_rng(0)
  arrays = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                    (np.arange(n) % 10 if cycle_labels else rng.integers(0, 10, n))
                    .astype(np.int32))
            for split, n in (('train', num_train), ('test', num_test))}
  FakeCifar10.examples = arrays
  FakeCifar10(data_dir=data_dir, file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return arrays


class ArrayRecordFilesTest(absltest.TestCase):
  """Real ArrayRecord files, read by the unmocked tfds.data_source and decoded with PIL."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp(prefix='fake_tfds_')
    cls.arrays = _write_fake_cifar10(cls.data_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _by_id(self, source, split):
    """Maps each stored example back to the array it was written from (tfds reorders)."""
    images, labels = self.arrays[split]
    out = []
    for i in range(len(source)):
      example = source[i]
      k = int(example['id'].decode().split('_')[1])
      np.testing.assert_array_equal(example['image'], images[k])  # PNG round trip.
      self.assertEqual(int(example['label']), labels[k])
      out.append(k)
    return out

  def test_reads_decodes_and_batches_without_tensorflow(self):
    ds = data.load_dataset('cifar10', data_dir=self.data_dir, num_threads=2)
    self.assertNotIn('tensorflow', sys.modules)
    self.assertEqual((ds.num_train, ds.num_test), (20, 7))
    train_ids = self._by_id(ds.train_source, 'train')
    test_ids = self._by_id(ds.test_source, 'test')
    batches = ds.train_batches(8, seed=0)
    images, labels = batches.get(3)
    written = [train_ids[int(i)] for i in batches.indices(3)]
    np.testing.assert_array_equal(images, self.arrays['train'][0][written])
    np.testing.assert_array_equal(labels, self.arrays['train'][1][written])
    rows_images, _ = ds.train_batches(8, seed=0, augment=dict(pad=4, flip=True)).get(3,
                                                                                     slice(2, 5))
    self.assertEqual(rows_images.shape, (3, 32, 32, 3))
    out = list(ds.eval_batches(4))
    self.assertEqual([n for _, _, n in out], [4, 3])
    eval_images = np.concatenate([b[0][:b[2]] for b in out])
    np.testing.assert_array_equal(eval_images, self.arrays['test'][0][test_ids])

  def test_cache_reads_the_files_once(self):
    ds = data.load_dataset('cifar10', data_dir=self.data_dir, cache=True, num_threads=2)
    order = self._by_id(data.load_dataset('cifar10', data_dir=self.data_dir).train_source,
                        'train')
    np.testing.assert_array_equal(ds.train_source.images, self.arrays['train'][0][order])
    np.testing.assert_array_equal(ds.train_source.labels, self.arrays['train'][1][order])

  def test_train_examples_per_class_reads_labels_without_decoding(self):
    data_dir = self.create_tempdir().full_path
    _write_fake_cifar10(data_dir, 30, 2, cycle_labels=True)
    full = data.load_dataset('cifar10', data_dir=data_dir)
    labels = tfds_data.split_labels('cifar10', 'train', data_dir, None)
    np.testing.assert_array_equal(
        labels, [int(full.train_source[i]['label']) for i in range(full.num_train)])
    ds = data.load_dataset('cifar10', data_dir=data_dir, train_examples_per_class=2)
    kept = data.class_stratified_indices(labels, 2, 10)
    self.assertEqual(ds.num_train, 20)
    for i, index in enumerate(kept):
      np.testing.assert_array_equal(ds.train_source[i]['image'],
                                    full.train_source[int(index)]['image'])
    self.assertNotIn('tensorflow', sys.modules)

  def test_split_slices(self):
    ds = data.load_dataset('cifar10', data_dir=self.data_dir, test_split='test[:3]')
    self.assertEqual(ds.num_test, 3)

  def test_tfrecord_copy_is_refused(self):
    data_dir = self.create_tempdir().full_path
    _write_fake_cifar10(data_dir, 4, 2)
    info_path = os.path.join(data_dir, 'cifar10', '3.0.2', 'dataset_info.json')
    with open(info_path) as f:
      info = json.load(f)
    info['fileFormat'] = 'tfrecord'  # As `tfds build` without --file_format writes it.
    with open(info_path, 'w') as f:
      json.dump(info, f)
    with self.assertRaises(ValueError) as caught:
      data.load_dataset('cifar10', data_dir=data_dir)
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertIn("as ['tfrecord'], which has no random access", message)
    self.assertIn('tfds build cifar10 --file_format=array_record --data_dir=DIR', message)


if __name__ == '__main__':
  absltest.main()
