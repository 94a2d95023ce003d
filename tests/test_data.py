"""Tests for gkt_jax.data: dataset sources, IDX reader, augmentation and batching."""

import gzip
import os
import struct

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from sklearn import datasets as sk_datasets

from PIL import Image

from gkt_jax import data
from gkt_jax.data import augment as augment_lib
from gkt_jax.data import sources

# Per-class sizes of scikit-learn's digits, classes 0..9, and the documented test counts.
DIGITS_CLASS_SIZES = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_TEST_PER_CLASS = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


def _idx_bytes(array: np.ndarray) -> bytes:
  """IDX encoding of a uint8 array, written by hand: 0x0000 0x08 ndim, big-endian dims."""
  array = np.asarray(array, np.uint8)
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.tobytes()


def _write(directory, name, payload, gz):
  path = os.path.join(directory, name + ('.gz' if gz else ''))
  with open(path, 'wb') as f:
    f.write(gzip.compress(payload) if gz else payload)
  return path


def _synthetic_idx(directory, gz=(False, False, False, False), seed=0):
  """Writes a tiny MNIST-style dataset (5 train, 3 test images of 3x4) and returns it."""
  rng = np.random.default_rng(seed)
  arrays = dict(
      train_images=rng.integers(0, 256, (5, 3, 4), dtype=np.uint8),
      train_labels=np.array([0, 9, 3, 3, 7], np.uint8),
      test_images=rng.integers(0, 256, (3, 3, 4), dtype=np.uint8),
      test_labels=np.array([1, 2, 9], np.uint8),
  )
  for (key, base), use_gz in zip(sources.IDX_FILES.items(), gz):
    _write(directory, base, _idx_bytes(arrays[key]), use_gz)
  return arrays


class DigitsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = data.load_dataset('digits')
    cls.raw = sk_datasets.load_digits()

  def test_shapes_dtypes_and_labels(self):
    ds = self.ds
    self.assertEqual(ds.name, 'digits')
    self.assertEqual(ds.num_classes, 10)
    self.assertEqual(ds.image_shape, (8, 8, 1))
    self.assertEqual(ds.train_images.shape, (1438, 8, 8, 1))
    self.assertEqual(ds.test_images.shape, (359, 8, 8, 1))
    self.assertEqual(ds.train_images.dtype, np.uint8)
    self.assertEqual(ds.test_images.dtype, np.uint8)
    self.assertEqual(ds.train_labels.dtype, np.int32)
    self.assertEqual(ds.test_labels.dtype, np.int32)
    for labels in (ds.train_labels, ds.test_labels):
      self.assertEqual(labels.min(), 0)
      self.assertEqual(labels.max(), 9)
    self.assertEqual(ds.mean.dtype, np.float32)
    self.assertEqual(ds.mean.shape, (1,))
    self.assertEqual(ds.std.shape, (1,))
    self.assertFalse(ds.train_images.flags.writeable)

  def test_counts_match_docstring(self):
    self.assertEqual(len(self.ds.train_labels), sources.DIGITS_NUM_TRAIN)
    self.assertEqual(len(self.ds.test_labels), sources.DIGITS_NUM_TEST)
    self.assertIn('1,438 train and 359 test', sources.load_digits.__doc__)
    self.assertIn('1,438 train', data.load_dataset.__doc__)
    self.assertIn('359 test', data.load_dataset.__doc__)
    self.assertIn(', '.join(map(str, DIGITS_TEST_PER_CLASS)),
                  ' '.join(sources.load_digits.__doc__.split()))

  def test_stratified(self):
    self.assertEqual(np.bincount(self.raw.target).tolist(), DIGITS_CLASS_SIZES)
    test_counts = np.bincount(self.ds.test_labels, minlength=10)
    train_counts = np.bincount(self.ds.train_labels, minlength=10)
    self.assertEqual(test_counts.tolist(), DIGITS_TEST_PER_CLASS)
    self.assertEqual(test_counts.tolist(), [round(0.2 * n) for n in DIGITS_CLASS_SIZES])
    self.assertEqual((train_counts + test_counts).tolist(), DIGITS_CLASS_SIZES)

  def test_split_reproduces_documented_rule_and_is_disjoint(self):
    labels = self.raw.target
    rng = np.random.default_rng(0)
    expected_test = []
    for cls in range(10):
      members = rng.permutation(np.flatnonzero(labels == cls))
      expected_test.extend(members[:round(0.2 * len(members))])
    train_idx, test_idx = data.digits_split_indices(labels)
    np.testing.assert_array_equal(test_idx, np.sort(expected_test))
    self.assertEmpty(np.intersect1d(train_idx, test_idx))
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])),
                                  np.arange(len(labels)))
    # The dataset's arrays are exactly those rows, scaled 0..16 -> 0..255.
    scaled = np.round(self.raw.images * 255 / 16).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(self.ds.train_images, scaled[train_idx])
    np.testing.assert_array_equal(self.ds.test_images, scaled[test_idx])
    np.testing.assert_array_equal(self.ds.train_labels, labels[train_idx])
    np.testing.assert_array_equal(self.ds.test_labels, labels[test_idx])
    self.assertEqual(scaled.max(), 255)
    self.assertEqual(int(np.round(8 * 255 / 16)), 128)

  def test_deterministic_across_calls(self):
    again = data.load_dataset('digits')
    for field in ('train_images', 'train_labels', 'test_images', 'test_labels', 'mean', 'std'):
      np.testing.assert_array_equal(getattr(again, field), getattr(self.ds, field))

  def test_mean_std(self):
    x = self.ds.train_images.astype(np.float64) / 255
    np.testing.assert_allclose(self.ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(self.ds.std, x.std(axis=(0, 1, 2)), rtol=1e-6)


class IdxTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path

  @parameterized.named_parameters(
      ('plain', (False, False, False, False)),
      ('gz', (True, True, True, True)),
      ('mixed', (True, False, False, True)),
  )
  def test_load_matches_written(self, gz):
    arrays = _synthetic_idx(self.tmp, gz)
    ds = data.load_dataset('mnist', data_dir=self.tmp)
    self.assertEqual(ds.name, 'mnist')
    self.assertEqual(ds.num_classes, 10)
    self.assertEqual(ds.image_shape, (3, 4, 1))
    np.testing.assert_array_equal(ds.train_images, arrays['train_images'][..., None])
    np.testing.assert_array_equal(ds.test_images, arrays['test_images'][..., None])
    np.testing.assert_array_equal(ds.train_labels, arrays['train_labels'])
    np.testing.assert_array_equal(ds.test_labels, arrays['test_labels'])
    self.assertEqual(ds.train_images.dtype, np.uint8)
    self.assertEqual(ds.train_labels.dtype, np.int32)
    x = arrays['train_images'].astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, [x.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [x.std()], rtol=1e-6)

  def test_fashion_mnist_with_data_dir(self):
    _synthetic_idx(self.tmp, (True,) * 4)
    ds = data.load_dataset('fashion_mnist', data_dir=self.tmp)
    self.assertEqual(ds.name, 'fashion_mnist')
    self.assertLen(ds.train_labels, 5)

  def test_read_idx_big_endian_int32(self):
    values = np.array([[1, -2, 70000], [3, 4, -5]], np.int32)
    payload = struct.pack('>BBBBII', 0, 0, 0x0C, 2, 2, 3) + values.astype('>i4').tobytes()
    path = _write(self.tmp, 'x-idx2-int', payload, gz=False)
    out = data.read_idx(path)
    np.testing.assert_array_equal(out, values)
    self.assertEqual(out.dtype, np.dtype(np.int32))  # Native byte order.

  @parameterized.named_parameters(
      ('nonzero_first_bytes', struct.pack('>BBBB', 8, 3, 0, 0), 'magic'),
      ('unknown_type', struct.pack('>BBBB', 0, 0, 0x07, 3), 'magic'),
      ('wrong_ndim', struct.pack('>BBBB', 0, 0, 0x08, 1), 'dimensions'),
  )
  def test_corrupt_header_raises(self, header, pattern):
    _synthetic_idx(self.tmp)
    path = os.path.join(self.tmp, sources.IDX_FILES['train_images'])
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(header + raw[4:])
    with self.assertRaisesRegex(ValueError, f'train-images-idx3-ubyte.*{pattern}'):
      data.load_dataset('mnist', data_dir=self.tmp)

  def test_truncated_payload_raises(self):
    _synthetic_idx(self.tmp, (True,) * 4)
    path = os.path.join(self.tmp, sources.IDX_FILES['test_images'] + '.gz')
    raw = gzip.decompress(open(path, 'rb').read())
    with open(path, 'wb') as f:
      f.write(gzip.compress(raw[:-1]))
    with self.assertRaisesRegex(ValueError, r't10k-images-idx3-ubyte\.gz.*truncated'):
      data.load_dataset('mnist', data_dir=self.tmp)

  def test_trailing_bytes_raise(self):
    _synthetic_idx(self.tmp)
    path = os.path.join(self.tmp, sources.IDX_FILES['train_labels'])
    with open(path, 'ab') as f:
      f.write(b'\x00')
    with self.assertRaisesRegex(ValueError, 'train-labels-idx1-ubyte.*holds 6 bytes'):
      data.load_dataset('mnist', data_dir=self.tmp)

  def test_count_mismatch_raises(self):
    _synthetic_idx(self.tmp)
    _write(self.tmp, sources.IDX_FILES['train_labels'], _idx_bytes(np.zeros(4, np.uint8)),
           gz=False)
    with self.assertRaisesRegex(ValueError, '5 images but .* 4 labels'):
      data.load_dataset('mnist', data_dir=self.tmp)

  def test_missing_directory_one_line_error(self):
    missing = os.path.join(self.tmp, 'nowhere')
    with self.assertRaises(FileNotFoundError) as cm:
      data.load_dataset('fashion_mnist', data_dir=missing)
    message = str(cm.exception)
    self.assertNotIn('\n', message)
    self.assertIn(missing, message)
    self.assertIn('train-images-idx3-ubyte', message)
    self.assertIn('t10k-labels-idx1-ubyte', message)
    self.assertIn('apt-get install dataset-fashion-mnist', message)
    self.assertIn('--config.data.dir=', message)

  def test_missing_file_named(self):
    _synthetic_idx(self.tmp)
    os.remove(os.path.join(self.tmp, sources.IDX_FILES['test_labels']))
    with self.assertRaises(FileNotFoundError) as cm:
      data.load_dataset('mnist', data_dir=self.tmp)
    message = str(cm.exception)
    self.assertNotIn('\n', message)
    self.assertRegex(message, r'lacks t10k-labels-idx1-ubyte\[\.gz\];')
    self.assertNotIn('lacks train', message)

  def test_mnist_requires_data_dir(self):
    with self.assertRaises(FileNotFoundError) as cm:
      data.load_dataset('mnist')
    self.assertNotIn('\n', str(cm.exception))
    self.assertIn('--config.data.dir=', str(cm.exception))

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, r"'cifar7'.*digits.*fashion_mnist.*mnist"):
      data.load_dataset('cifar7')

  @absltest.skipUnless(os.path.isdir(data.FASHION_MNIST_DIR),
                       f'{data.FASHION_MNIST_DIR} missing: apt-get install dataset-fashion-mnist')
  def test_real_fashion_mnist(self):
    ds = data.load_dataset('fashion_mnist')
    self.assertEqual(ds.train_images.shape, (60000, 28, 28, 1))
    self.assertEqual(ds.test_images.shape, (10000, 28, 28, 1))
    self.assertEqual(ds.num_classes, 10)
    self.assertEqual(np.bincount(ds.train_labels).tolist(), [6000] * 10)
    self.assertEqual(np.bincount(ds.test_labels).tolist(), [1000] * 10)
    # Published Fashion-MNIST train statistics: mean 0.2860, std 0.3530.
    np.testing.assert_allclose(ds.mean, [0.2860], atol=1e-4)
    np.testing.assert_allclose(ds.std, [0.3530], atol=1e-4)


class NormalizeTest(absltest.TestCase):

  def test_hand_computed(self):
    images = np.array([[[[0, 255]], [[51, 102]]]], np.uint8)  # [1, 2, 1, 2]
    out = data.normalize(images, np.array([0.2, 0.4]), np.array([0.5, 0.25]))
    self.assertEqual(out.dtype, np.float32)
    expected = np.array([[[[-0.4, 2.4]], [[0.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-6)


class PadCropFlipTest(parameterized.TestCase):

  def test_identity(self):
    images = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    out = data.pad_crop_flip(images, np.random.default_rng(1), pad=0, flip=False)
    np.testing.assert_array_equal(out, images)
    self.assertEqual(out.dtype, np.uint8)

  @parameterized.product(pad=(0, 1, 4), flip=(False, True), dtype=(np.uint8, np.float32))
  def test_shape_and_dtype(self, pad, flip, dtype):
    images = np.ones((7, 9, 5, 3), dtype)
    out = data.pad_crop_flip(images, np.random.default_rng(0), pad=pad, flip=flip)
    self.assertEqual(out.shape, images.shape)
    self.assertEqual(out.dtype, np.dtype(dtype))

  def test_each_output_is_a_window_of_the_padded_input(self):
    pad, batch, height, width = 2, 400, 5, 4
    rng = np.random.default_rng(0)
    # Values >= 1, so zero padding is distinguishable and every window is unique.
    images = rng.integers(1, 256, (batch, height, width, 2), dtype=np.uint8)
    out = data.pad_crop_flip(images, np.random.default_rng(1), pad=pad, flip=True)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    found = []
    for b in range(batch):
      matches = []
      for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
          window = padded[b, dy:dy + height, dx:dx + width]
          for flipped in (False, True):
            candidate = window[:, ::-1] if flipped else window
            if np.array_equal(out[b], candidate):
              matches.append((dy, dx, flipped))
      self.assertLen(matches, 1, f'example {b}: {matches}')
      found.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in found}
    # Per-example offsets: every one of the 25 offsets occurs among 400 examples.
    self.assertLen(offsets, (2 * pad + 1) ** 2)
    flips = np.mean([f for _, _, f in found])
    self.assertBetween(flips, 0.4, 0.6)

  def test_flip_rate(self):
    batch = 4000
    images = np.broadcast_to(np.arange(3, dtype=np.uint8)[None, None, :, None],
                             (batch, 2, 3, 1))
    out = data.pad_crop_flip(images, np.random.default_rng(0), pad=0, flip=True)
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    np.testing.assert_array_equal(flipped, ~kept)
    self.assertBetween(flipped.mean(), 0.47, 0.53)

  def test_deterministic_given_seed(self):
    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    a = data.pad_crop_flip(images, np.random.default_rng(5), pad=2, flip=True)
    b = data.pad_crop_flip(images, np.random.default_rng(5), pad=2, flip=True)
    c = data.pad_crop_flip(images, np.random.default_rng(6), pad=2, flip=True)
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(a, c))


class ImageNetTransformsTest(parameterized.TestCase):

  @parameterized.parameters((500, 375), (375, 500), (64, 64), (20, 300), (300, 20))
  def test_random_resized_crop_box_is_inside_with_allowed_shape(self, height, width):
    rng = np.random.default_rng(0)
    for _ in range(200):
      top, left, h, w = augment_lib.random_resized_crop_box(rng, height, width)
      self.assertBetween(top, 0, height - h)
      self.assertBetween(left, 0, width - w)
      self.assertGreaterEqual(min(h, w), 1)
      if (h, w) != (height, width) and h < height and w < width:  # Not the fallback.
        self.assertBetween(w / h, 3 / 4 - 0.1, 4 / 3 + 0.1)
        self.assertBetween(h * w / (height * width), 0.08 - 0.02, 1.0)

  def test_random_resized_crop_box_fallback_is_central(self):
    # 20 x 300: no box of ratio <= 4/3 and area >= 8% fits; torchvision's fallback is the
    # central crop of the whole height with width round(20 * 4/3) = 27.
    rng = np.random.default_rng(0)
    boxes = {augment_lib.random_resized_crop_box(rng, 20, 300, scale=(0.5, 1.0))
             for _ in range(20)}
    self.assertEqual(boxes, {(0, (300 - 27) // 2, 20, 27)})

  def test_random_resized_crop_full_box_is_a_resize(self):
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = augment_lib.random_resized_crop(image, np.random.default_rng(1), size=16,
                                          scale=(1.0, 1.0), ratio=(0.75, 0.75), flip=False)
    expected = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    self.assertEqual(out.dtype, np.uint8)

  def test_random_resized_crop_flips_half(self):
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    rng = np.random.default_rng(2)
    outs = [augment_lib.random_resized_crop(image, rng, size=8, scale=(1.0, 1.0),
                                            ratio=(1.0, 1.0)) for _ in range(400)]
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    self.assertTrue(all(f or np.array_equal(o, image) for f, o in zip(flipped, outs)))
    self.assertBetween(np.mean(flipped), 0.4, 0.6)
    self.assertEqual(outs[0].shape, (8, 8, 1))

  def test_resize_center_crop(self):
    # 300 x 600 -> shorter side 256: 256 x 512, then the central 224 x 224 (top 16, left 144).
    image = np.random.default_rng(0).integers(0, 256, (300, 600, 3), dtype=np.uint8)
    out = augment_lib.resize_center_crop(image, size=224, resize_size=256)
    resized = np.asarray(Image.fromarray(image).resize((512, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, resized[16:240, 144:368])
    tall = augment_lib.resize_center_crop(image.transpose(1, 0, 2), size=224, resize_size=256)
    self.assertEqual(tall.shape, (224, 224, 3))
    with self.assertRaisesRegex(ValueError, 'larger than resize_size'):
      augment_lib.resize_center_crop(image, size=300, resize_size=256)


def _indexed_data(num, height=4, width=4):
  """Images whose pixels all equal the example index (num <= 256), labels = index."""
  images = np.broadcast_to(np.arange(num, dtype=np.uint8)[:, None, None, None],
                           (num, height, width, 1)).copy()
  return images, np.arange(num, dtype=np.int32)


class TrainBatchesTest(parameterized.TestCase):

  def test_each_epoch_covers_every_example_once(self):
    images, labels = _indexed_data(103)
    batches = data.TrainBatches(images, labels, 10, seed=3)
    self.assertEqual(batches.steps_per_epoch, 10)
    orders = []
    for epoch in range(3):
      seen = []
      for step in range(epoch * 10, (epoch + 1) * 10):
        batch_images, batch_labels = batches.get(step)
        self.assertEqual(batch_images.shape, (10, 4, 4, 1))
        self.assertEqual(batch_images.dtype, np.uint8)
        self.assertEqual(batch_labels.dtype, np.int32)
        np.testing.assert_array_equal(batch_images[:, 0, 0, 0], batch_labels)
        seen.extend(batch_labels)
      self.assertLen(seen, 100)
      self.assertLen(set(seen), 100)
      # Order is the documented permutation; its last N % B examples are dropped.
      order = np.random.default_rng([3, epoch]).permutation(103)
      np.testing.assert_array_equal(seen, order[:100])
      orders.append(seen)
    self.assertNotEqual(orders[0], orders[1])

  def test_augmentation_uses_step_rng(self):
    images = np.random.default_rng(0).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(50, dtype=np.int32)
    batches = data.TrainBatches(images, labels, 8, seed=7, augment=dict(pad=2, flip=True))
    for step in (0, 5, 17):
      batch_images, batch_labels = batches.get(step)
      expected = data.pad_crop_flip(images[batch_labels],
                                    np.random.default_rng([7, 1_000_003, step]),
                                    pad=2, flip=True)
      np.testing.assert_array_equal(batch_images, expected)
      self.assertFalse(np.array_equal(batch_images, images[batch_labels]))

  def test_resume_and_call_order_independent(self):
    images = np.random.default_rng(0).integers(0, 256, (37, 6, 6, 1), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, 37).astype(np.int32)
    kw = dict(seed=11, augment=dict(pad=1, flip=True))
    reference = []
    for step, batch_images, batch_labels in data.TrainBatches(images, labels, 5, **kw).iterate():
      reference.append((step, batch_images, batch_labels))
      if step == 29:
        break
    self.assertEqual([r[0] for r in reference], list(range(30)))
    # Resume from the middle with a fresh object.
    resumed = data.TrainBatches(images, labels, 5, **kw).iterate(start_step=13)
    for expected in reference[13:]:
      step, batch_images, batch_labels = next(resumed)
      self.assertEqual(step, expected[0])
      np.testing.assert_array_equal(batch_images, expected[1])
      np.testing.assert_array_equal(batch_labels, expected[2])
    # Random access in a scrambled order.
    shuffled = data.TrainBatches(images, labels, 5, **kw)
    for step in np.random.default_rng(2).permutation(30):
      batch_images, batch_labels = shuffled.get(step)
      np.testing.assert_array_equal(batch_images, reference[step][1])
      np.testing.assert_array_equal(batch_labels, reference[step][2])

  def test_different_seeds_differ(self):
    images, labels = _indexed_data(64)
    a = data.TrainBatches(images, labels, 16, seed=0)
    b = data.TrainBatches(images, labels, 16, seed=1)
    self.assertFalse(np.array_equal(a.get(0)[1], b.get(0)[1]))
    self.assertFalse(np.array_equal(a.get(4)[1], a.get(0)[1]))  # Epoch 1 differs from epoch 0.

  def test_batch_larger_than_dataset(self):
    images, labels = _indexed_data(10)
    with self.assertRaisesRegex(ValueError, 'batch_size=11 .* 10 training examples'):
      data.TrainBatches(images, labels, 11, seed=0)

  def test_unknown_augment_key(self):
    images, labels = _indexed_data(10)
    with self.assertRaisesRegex(ValueError, 'crop'):
      data.TrainBatches(images, labels, 2, seed=0, augment=dict(crop=2))

  @parameterized.parameters((dict(pad=2, flip=True),), (dict(pad=0, flip=True),),
                            (dict(pad=3),), (None,))
  def test_rows_equal_the_full_batch_rows(self, augment):
    images = np.random.default_rng(0).integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(40, dtype=np.int32)
    batches = data.TrainBatches(images, labels, 12, seed=4, augment=augment)
    for step in (0, 3, 7):
      full_images, full_labels = batches.get(step)
      for processes in (1, 2, 3, 4):
        per = 12 // processes
        parts = [batches.get(step, slice(p * per, (p + 1) * per)) for p in range(processes)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full_images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full_labels)
      rows = slice(1, 12, 5)
      np.testing.assert_array_equal(batches.get(step, rows)[0], full_images[rows])
    _, first = next(batches.iterate(3, rows=slice(4, 8)))[1:]
    np.testing.assert_array_equal(first, batches.get(3)[1][4:8])
    with self.assertRaisesRegex(TypeError, 'must be a slice'):
      batches.get(0, rows=np.arange(3))

  @parameterized.parameters((dict(pad=2, flip=True),), (dict(pad=0, flip=True),),
                            (dict(pad=3),), (None,))
  def test_device_augmentation_gives_the_host_images(self, augment):
    images = np.random.default_rng(0).integers(0, 256, (40, 6, 7, 3), dtype=np.uint8)
    labels = np.arange(40, dtype=np.int32)
    batches = data.TrainBatches(images, labels, 12, seed=4, augment=augment)
    pad = batches.device_augment_pad
    self.assertEqual(pad, None if augment is None else augment.get('pad', 0))
    device_augment = jax.jit(data.device_pad_crop_flip, static_argnames='pad')
    for step, rows in ((0, None), (3, slice(4, 10)), (7, slice(0, 12))):
      want_images, want_labels = batches.get(step, rows)
      raw, got_labels, crops = batches.get_for_device(step, rows)
      np.testing.assert_array_equal(got_labels, want_labels)
      if augment is None:
        self.assertIsNone(crops)
        np.testing.assert_array_equal(raw, want_images)
        continue
      self.assertEqual(crops.dtype, np.int32)
      got = device_augment(raw, crops, pad=pad)
      self.assertEqual(got.dtype, np.uint8)
      np.testing.assert_array_equal(got, want_images)
      self.assertFalse(np.array_equal(got, raw))  # the draws did something
    step, *outputs = next(batches.iterate(5, slice(2, 6), for_device=True))
    self.assertEqual(step, 5)
    for got, want in zip(outputs, batches.get_for_device(5, slice(2, 6))):
      np.testing.assert_array_equal(got, want)


class ArrayDatasetInterfaceTest(absltest.TestCase):

  def test_digits_has_the_dataset_interface(self):
    ds = data.load_dataset('digits')
    self.assertIsInstance(ds, data.Dataset)
    self.assertEqual((ds.num_train, ds.num_test), (1438, 359))
    batches = ds.train_batches(64, seed=2, augment=dict(pad=1))
    self.assertIsInstance(batches, data.TrainBatchSource)
    reference = data.TrainBatches(ds.train_images, ds.train_labels, 64, seed=2,
                                  augment=dict(pad=1))
    self.assertEqual(batches.steps_per_epoch, 1438 // 64)
    for got, expected in zip(batches.get(30), reference.get(30)):
      np.testing.assert_array_equal(got, expected)
    for got, expected in zip(ds.eval_batches(100),
                             data.eval_batches(ds.test_images, ds.test_labels, 100)):
      np.testing.assert_array_equal(got[0], expected[0])
      np.testing.assert_array_equal(got[1], expected[1])
      self.assertEqual(got[2], expected[2])

  def test_in_memory_datasets_take_only_test_examples(self):
    with self.assertRaisesRegex(ValueError, r"digits: unknown options \['image_size'\]; "
                                r"allowed: \['test_examples'\]"):
      data.load_dataset('digits', image_size=3)
    full = data.load_dataset('digits')
    first = data.load_dataset('digits', test_examples=50)
    self.assertEqual((first.num_test, first.num_train), (50, full.num_train))
    np.testing.assert_array_equal(first.test_images, full.test_images[:50])
    np.testing.assert_array_equal(first.test_labels, full.test_labels[:50])
    np.testing.assert_array_equal(first.mean, full.mean)  # train statistics unchanged
    for bad in (0, 2.5, True):
      with self.assertRaisesRegex(ValueError, rf'test_examples={bad!r} must be an integer'):
        data.load_dataset('digits', test_examples=bad)


class TrainSubsetTest(parameterized.TestCase):
  """`train_examples_per_class` and the training-accuracy sample (gkt_jax/data/subsets.py)."""

  def test_rule_written_out(self):
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 2, 1, 1, 0, 2])
    got = data.class_stratified_indices(labels, 2, 3)
    rng = np.random.default_rng(0)  # the docstring's rule, class by class
    want = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:2]
                                   for c in range(3)]))
    np.testing.assert_array_equal(got, want)
    self.assertEqual(got.dtype, np.int64)
    np.testing.assert_array_equal(np.bincount(labels[got]), [2, 2, 2])

  def test_smaller_subsets_nest_and_calls_repeat(self):
    labels = np.random.default_rng(5).integers(0, 4, 200)
    small = data.class_stratified_indices(labels, 10, 4)
    large = data.class_stratified_indices(labels, 30, 4)
    self.assertTrue(set(small) <= set(large))
    np.testing.assert_array_equal(small, data.class_stratified_indices(labels, 10, 4))

  @parameterized.parameters(
      (0, r'digits: train_examples_per_class=0 must be an integer >= 1 \(or None'),
      (-3, r'train_examples_per_class=-3 must be an integer >= 1'),
      (True, r'train_examples_per_class=True must be an integer >= 1'),
      (2.5, r'train_examples_per_class=2.5 must be an integer >= 1'),
      (175, r'digits: train_examples_per_class=175 is more than class 8 has \(139 train '
            r'examples\); allowed: 1 to 139'))
  def test_bad_values_are_one_line_errors(self, value, message):
    with self.assertRaisesRegex(ValueError, message) as caught:
      data.load_dataset('digits', train_examples_per_class=value)
    self.assertNotIn('\n', str(caught.exception))

  def test_in_memory_dataset_keeps_the_subset_and_the_rest(self):
    full = data.load_dataset('digits')
    cut = data.load_dataset('digits', train_examples_per_class=20, test_examples=30)
    kept = data.class_stratified_indices(full.train_labels, 20, 10)
    self.assertEqual((cut.num_train, cut.num_test), (200, 30))
    np.testing.assert_array_equal(cut.train_images, full.train_images[kept])
    np.testing.assert_array_equal(cut.train_labels, full.train_labels[kept])
    np.testing.assert_array_equal(cut.test_images, full.test_images[:30])
    np.testing.assert_array_equal(cut.mean, full.mean)  # the whole split's statistics
    np.testing.assert_array_equal(cut.std, full.std)
    self.assertEqual(cut.train_batches(50, seed=0).steps_per_epoch, 4)
    # The largest subset is the whole split, in its own order.
    self.assertEqual(data.load_dataset('digits', train_examples_per_class=139).num_train, 1390)

  def test_train_eval_batches(self):
    ds = data.load_dataset('digits')
    sample = np.array([5, 17, 400, 1437])
    out = list(ds.train_eval_batches(3, sample))
    self.assertEqual([n for _, _, n in out], [3, 1])
    np.testing.assert_array_equal(np.concatenate([b[0][:b[2]] for b in out]),
                                  ds.train_images[sample])
    np.testing.assert_array_equal(np.concatenate([b[1][:b[2]] for b in out]),
                                  ds.train_labels[sample])
    whole = list(ds.train_eval_batches(500))
    self.assertEqual(sum(n for _, _, n in whole), 1438)

  def test_train_sample(self):
    self.assertIsNone(data.train_sample(100, None))
    self.assertIsNone(data.train_sample(100, 100))
    sample = data.train_sample(100, 30)
    self.assertLen(set(sample), 30)
    self.assertTrue(np.all(np.diff(sample) > 0) and sample.max() < 100)
    np.testing.assert_array_equal(sample, data.train_sample(100, 30))
    np.testing.assert_array_equal(
        sample, np.sort(np.random.default_rng(0).choice(100, 30, replace=False)))
    with self.assertRaisesRegex(ValueError, r'train_accuracy_examples=0 must be an integer'):
      data.train_sample(100, 0)


class EvalBatchesTest(parameterized.TestCase):

  @parameterized.parameters((23, 5), (20, 5), (3, 8), (7, 1))
  def test_covers_every_example_once(self, num, batch_size):
    images, labels = _indexed_data(num, 2, 3)
    out = list(data.eval_batches(images, labels, batch_size))
    self.assertLen(out, -(-num // batch_size))
    valid_images, valid_labels, counts = [], [], []
    for batch_images, batch_labels, num_valid in out:
      self.assertEqual(batch_images.shape, (batch_size, 2, 3, 1))
      self.assertEqual(batch_labels.shape, (batch_size,))
      self.assertEqual(batch_images.dtype, np.uint8)
      valid_images.append(batch_images[:num_valid])
      valid_labels.append(batch_labels[:num_valid])
      counts.append(num_valid)
    expected_counts = [batch_size] * (num // batch_size)
    if num % batch_size:
      expected_counts.append(num % batch_size)
    self.assertEqual(counts, expected_counts)
    np.testing.assert_array_equal(np.concatenate(valid_images), images)
    np.testing.assert_array_equal(np.concatenate(valid_labels), labels)


if __name__ == '__main__':
  absltest.main()
