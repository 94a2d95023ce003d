"""Normalisation (host or device) and per-example augmentation.

pad-crop-flip (CIFAR-style): its draws on the host (numpy), the crop and flip in numpy or on
the device inside the training step (`device_pad_crop_flip`, the same result bitwise; the
trainer's choice for in-memory and fixed-size tfds datasets); ImageNet's random-resized-crop
and resize + center crop in PIL (host side).
"""

import math

import jax.numpy as jnp
import numpy as np
from PIL import Image


def normalize(images, mean, std):
  """(images / 255 - mean) / std as float32: the model input, everywhere it is made.

  Args:
    images: uint8[..., C] (any leading shape): a numpy array (result: numpy) or a jax array,
      traced or not (result: jax, e.g. inside the jitted step).
    mean: float[C], per-channel mean in [0, 1] units.
    std: float[C], per-channel standard deviation in [0, 1] units.

  Returns:
    float32[..., C].
  """
  if not hasattr(images, 'astype'):
    images = np.asarray(images)
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (images.astype(np.float32) / np.float32(255) - mean) / std


def pad_crop_flip_params(rng: np.random.Generator, batch: int, *, pad: int,
                         flip: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
  """The random draws of `pad_crop_flip` for a batch of `batch` examples.

  Draws, in order: offsets int64[B, 2] in [0, 2 * pad] (only if pad > 0), then flips
  bool[B] as rng.random(B) < 0.5 (only if flip). Returns (offsets or None, flips or None).
  """
  if pad < 0:
    raise ValueError(f'pad={pad} must be >= 0')
  offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2)) if pad > 0 else None
  flips = rng.random(batch) < 0.5 if flip else None
  return offsets, flips


def apply_pad_crop_flip(images: np.ndarray, offsets: np.ndarray | None,
                        flips: np.ndarray | None, *, pad: int) -> np.ndarray:
  """Crops `images` [B, H, W, C] zero-padded by `pad` at `offsets` int[B, 2] (row, column)
  and mirrors the examples where `flips` bool[B] is True; None skips that part.

  Each output example depends only on its own image, offset and flip, so applying this to
  rows of a batch equals the same rows of the result for the whole batch.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be [B, H, W, C], got shape {images.shape}')
  if offsets is None and flips is None:
    return images.copy()
  batch, height, width, _ = images.shape
  rows = np.broadcast_to(np.arange(height), (batch, height))
  cols = np.broadcast_to(np.arange(width), (batch, width))
  source = images
  if offsets is not None:
    rows = rows + offsets[:, :1]
    cols = cols + offsets[:, 1:]
    source = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  if flips is not None:
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
  # One gather: out[b, i, j] = source[b, rows[b, i], cols[b, j]].
  return source[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def crop_table(offsets: np.ndarray | None, flips: np.ndarray | None,
               batch: int) -> np.ndarray:
  """int32[B, 3] rows (row offset, column offset, flip 0/1) of `pad_crop_flip_params`' draws
  (None: offsets 0, no flip): the input of `device_pad_crop_flip`."""
  table = np.zeros((batch, 3), np.int32)
  if offsets is not None:
    table[:, :2] = offsets
  if flips is not None:
    table[:, 2] = flips
  return table


def device_pad_crop_flip(images, crops, *, pad: int):
  """`apply_pad_crop_flip` in jax (traced inside the jitted step): images uint8[B, H, W, C]
  cropped from their zero padding by `pad` at crops[:, :2] and mirrored where crops[:, 2] is
  1 (`crop_table`). Integer indexing only, so bitwise the numpy result."""
  batch, height, width, _ = images.shape
  if pad:
    images = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = jnp.arange(height)[None, :] + crops[:, :1]
  cols = jnp.arange(width)[None, :] + crops[:, 1:2]
  cols = jnp.where(crops[:, 2:3] == 1, cols[:, ::-1], cols)
  return images[jnp.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, *, pad: int,
                  flip: bool) -> np.ndarray:
  """Per-example random crop after zero padding, and random horizontal flip.

  Each example is zero-padded by `pad` pixels on every spatial side and an H x W window at a
  uniformly random offset in [0, 2 * pad] x [0, 2 * pad] is cut out (pad=0: no crop). With
  `flip`, each example is mirrored left-right with probability 0.5. Random draws, in order:
  offsets int[B, 2] (only if pad > 0), then flips (rng.random(B) < 0.5, only if flip); see
  `pad_crop_flip_params` and `apply_pad_crop_flip`.

  Args:
    images: [B, H, W, C] of any dtype.
    rng: the numpy generator all randomness comes from.
    pad: padding on each spatial side, >= 0.
    flip: whether to flip at random.

  Returns:
    A new array of the same shape and dtype (a copy of `images` when pad=0 and not flip).
  """
  if pad < 0:
    raise ValueError(f'pad={pad} must be >= 0')
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be [B, H, W, C], got shape {images.shape}')
  offsets, flips = pad_crop_flip_params(rng, len(images), pad=pad, flip=flip)
  return apply_pad_crop_flip(images, offsets, flips, pad=pad)


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int, *,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3),
                            attempts: int = 10) -> tuple[int, int, int, int]:
  """A crop box (top, left, crop_height, crop_width) as torchvision's RandomResizedCrop draws it.

  Up to `attempts` times: area fraction ~ U(scale), log aspect (w / h) ~ U(log ratio),
  w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first box that fits
  gets a uniform position (top, then left). Otherwise a central box of the whole image with
  its aspect clamped to `ratio`.
  """
  area = height * width
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(attempts):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_low, log_high))
    crop_width = int(round(math.sqrt(target_area * aspect)))
    crop_height = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      return top, left, crop_height, crop_width
  in_ratio = width / height
  if in_ratio < min(ratio):
    crop_width, crop_height = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    crop_height, crop_width = height, int(round(height * max(ratio)))
  else:
    crop_height, crop_width = height, width
  return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def _to_pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, *, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        flip: bool = True) -> np.ndarray:
  """ImageNet training augmentation of one image: random-resized-crop to size x size
  (bilinear, PIL) and, with `flip`, a left-right mirror with probability 0.5.

  Args:
    image: uint8[H, W, C] (C = 1 or 3), any H, W >= 1.
    rng: draws the box (`random_resized_crop_box`), then the flip (rng.random() < 0.5).
    size: output side.
    scale, ratio: as in `random_resized_crop_box`.
    flip: whether to flip at random.

  Returns:
    uint8[size, size, C].
  """
  height, width, channels = image.shape
  top, left, crop_height, crop_width = random_resized_crop_box(rng, height, width,
                                                               scale=scale, ratio=ratio)
  out = _to_pil(image).resize((size, size), Image.Resampling.BILINEAR,
                              box=(left, top, left + crop_width, top + crop_height))
  out = _from_pil(out, channels)
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def resize_center_crop(image: np.ndarray, *, size: int, resize_size: int) -> np.ndarray:
  """ImageNet evaluation transform of one image: resize (bilinear, PIL) so the shorter side is
  `resize_size` (longer side int(resize_size * long / short), as torchvision's Resize), then
  the central size x size crop (top = round((H' - size) / 2), likewise left).

  Args:
    image: uint8[H, W, C] (C = 1 or 3).
    size: output side, <= resize_size.
    resize_size: the shorter side after resizing.

  Returns:
    uint8[size, size, C].
  """
  if size > resize_size:
    raise ValueError(f'crop size={size} is larger than resize_size={resize_size}')
  height, width, channels = image.shape
  if height <= width:
    new_height, new_width = resize_size, int(resize_size * width / height)
  else:
    new_height, new_width = int(resize_size * height / width), resize_size
  resized = _from_pil(_to_pil(image).resize((new_width, new_height),
                                            Image.Resampling.BILINEAR), channels)
  top = int(round((new_height - size) / 2.0))
  left = int(round((new_width - size) / 2.0))
  return np.ascontiguousarray(resized[top:top + size, left:left + size])
