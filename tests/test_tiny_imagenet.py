"""Tests for gkt_jax.data.tiny_imagenet on a small fake tiny-imagenet-200 folder."""

import os

from absl.testing import absltest
import numpy as np
from PIL import Image

from gkt_jax import data
from gkt_jax.data import tiny_imagenet

# wnids.txt order is not sorted: class indices follow the sorted order.
_WNIDS = ['n03444034', 'n01443537', 'n02124075']
_TRAIN_PER_CLASS = 3
_VAL = [('val_0.JPEG', 'n02124075'), ('val_1.JPEG', 'n03444034'), ('val_2.JPEG', 'n01443537'),
        ('val_3.JPEG', 'n03444034')]


def _write_fake(root):
  """A tiny-imagenet-200 layout with random 64x64 JPEGs (one grayscale); returns the root."""
  rng = np.random.default_rng(0)

  def jpeg(path, gray=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (64, 64) if gray else (64, 64, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, 'JPEG')

  with open(os.path.join(root, 'wnids.txt'), 'w') as f:
    f.write('\n'.join(_WNIDS) + '\n')
  for wnid in _WNIDS:
    for k in range(_TRAIN_PER_CLASS):
      jpeg(os.path.join(root, 'train', wnid, 'images', f'{wnid}_{k}.JPEG'),
           gray=(wnid, k) == ('n01443537', 1))
    with open(os.path.join(root, 'train', wnid, f'{wnid}_boxes.txt'), 'w') as f:
      f.write('')
  lines = []
  for name, wnid in _VAL:
    jpeg(os.path.join(root, 'val', 'images', name))
    lines.append(f'{name}\t{wnid}\t0\t0\t63\t63')
  with open(os.path.join(root, 'val', 'val_annotations.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return root


def _pil(path):
  return np.asarray(Image.open(path).convert('RGB'))


class TinyImageNetTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = _write_fake(self.create_tempdir('tiny-imagenet-200').full_path)

  def test_loads_images_and_labels(self):
    ds = data.load_dataset('tiny_imagenet', data_dir=self.root, num_threads=2)
    self.assertIsInstance(ds, data.ArrayDataset)
    self.assertIsInstance(ds, data.Dataset)
    self.assertEqual(ds.name, 'tiny_imagenet')
    self.assertEqual(ds.num_classes, 3)
    self.assertEqual(ds.image_shape, (64, 64, 3))
    self.assertEqual((ds.num_train, ds.num_test), (9, 4))
    order = sorted(_WNIDS)
    expected_labels = [c for c in range(3) for _ in range(_TRAIN_PER_CLASS)]
    np.testing.assert_array_equal(ds.train_labels, expected_labels)
    np.testing.assert_array_equal(ds.test_labels, [order.index(w) for _, w in _VAL])
    for i, label in enumerate(expected_labels):
      wnid, k = order[label], i % _TRAIN_PER_CLASS
      np.testing.assert_array_equal(
          ds.train_images[i], _pil(os.path.join(self.root, 'train', wnid, 'images',
                                                f'{wnid}_{k}.JPEG')))
    # The grayscale file became 3 equal channels.
    gray = ds.train_images[1]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    for i, (name, _) in enumerate(_VAL):
      np.testing.assert_array_equal(ds.test_images[i],
                                    _pil(os.path.join(self.root, 'val', 'images', name)))
    x = ds.train_images.astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
    # Serial decoding gives the same arrays.
    serial = data.load_dataset('tiny_imagenet', data_dir=self.root, num_threads=1)
    np.testing.assert_array_equal(serial.train_images, ds.train_images)
    images, labels = ds.train_batches(4, seed=0, augment=dict(pad=4, flip=True)).get(1)
    self.assertEqual(images.shape, (4, 64, 64, 3))

  def test_missing_folder_is_one_line(self):
    missing = os.path.join(self.root, 'nope')
    for data_dir, what in ((missing, f'directory {missing} does not exist'),
                           (None, 'no directory given')):
      with self.assertRaises(FileNotFoundError) as caught:
        data.load_dataset('tiny_imagenet', data_dir=data_dir)
      message = str(caught.exception)
      self.assertNotIn('\n', message)
      self.assertStartsWith(message, f'tiny_imagenet: {what}')
      self.assertIn(tiny_imagenet.URL, message)
      self.assertIn('--config.data.dir=', message)

  def test_missing_class_folder_is_named(self):
    os.rename(os.path.join(self.root, 'train', 'n02124075'),
              os.path.join(self.root, 'train', 'moved'))
    with self.assertRaisesRegex(FileNotFoundError, r'train/n02124075/images is missing'):
      data.load_dataset('tiny_imagenet', data_dir=self.root)

  def test_wrong_size_and_unknown_class(self):
    Image.new('RGB', (32, 64)).save(os.path.join(self.root, 'val', 'images', 'val_2.JPEG'),
                                    'JPEG')
    with self.assertRaisesRegex(ValueError, r'val_2.JPEG is 32x64, expected 64x64'):
      data.load_dataset('tiny_imagenet', data_dir=self.root)
    with open(os.path.join(self.root, 'val', 'val_annotations.txt'), 'a') as f:
      f.write('val_9.JPEG\tn99999999\t0\t0\t1\t1\n')
    with self.assertRaisesRegex(ValueError, r"line 5 names class 'n99999999'"):
      data.load_dataset('tiny_imagenet', data_dir=self.root)


if __name__ == '__main__':
  absltest.main()
