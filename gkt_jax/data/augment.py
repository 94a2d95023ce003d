"""Normalisation and per-example pad-crop-flip augmentation in numpy (host side)."""

import numpy as np


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """(images / 255 - mean) / std as float32.

  Args:
    images: uint8[..., C] (any leading shape).
    mean: float[C], per-channel mean in [0, 1] units.
    std: float[C], per-channel standard deviation in [0, 1] units.

  Returns:
    float32[..., C].
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (np.asarray(images).astype(np.float32) / np.float32(255) - mean) / std


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, *, pad: int,
                  flip: bool) -> np.ndarray:
  """Per-example random crop after zero padding, and random horizontal flip.

  Each example is zero-padded by `pad` pixels on every spatial side and an H x W window at a
  uniformly random offset in [0, 2 * pad] x [0, 2 * pad] is cut out (pad=0: no crop). With
  `flip`, each example is mirrored left-right with probability 0.5. Random draws, in order:
  offsets int[B, 2] (only if pad > 0), then flips (rng.random(B) < 0.5, only if flip).

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
  if pad == 0 and not flip:
    return images.copy()
  batch, height, width, _ = images.shape
  rows = np.broadcast_to(np.arange(height), (batch, height))
  cols = np.broadcast_to(np.arange(width), (batch, width))
  source = images
  if pad > 0:
    offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
    rows = rows + offsets[:, :1]
    cols = cols + offsets[:, 1:]
    source = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  if flip:
    flipped = rng.random(batch) < 0.5
    cols = np.where(flipped[:, None], cols[:, ::-1], cols)
  # One gather: out[b, i, j] = source[b, rows[b, i], cols[b, j]].
  return source[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
