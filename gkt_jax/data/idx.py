"""Reader for the IDX format of the MNIST-family files (plain or gzip-compressed).

An IDX file is: two zero bytes, a type byte, a byte with the number of dimensions n, n
big-endian uint32 sizes, then the values in C order (big-endian for multi-byte types).
"""

import gzip
import os
import struct

import numpy as np

# IDX type byte -> numpy dtype (big-endian where it matters).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}

_GZIP_MAGIC = b'\x1f\x8b'


class DataError(ValueError):
  """A data file that exists but cannot be used (corrupt, truncated, inconsistent)."""


def _read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == _GZIP_MAGIC:  # Decide by content, not by the file name.
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, ValueError) as e:
      raise DataError(f'{path}: corrupt gzip data ({e})') from e
  return raw


def read_idx(path: str, *, expected_ndim: int | None = None) -> np.ndarray:
  """Reads one IDX file (optionally gzip-compressed) into a native-endian numpy array.

  Args:
    path: the file; gzip compression is detected from its first bytes.
    expected_ndim: if given, the number of dimensions the header must declare
      (3 for `*-images-idx3-ubyte`, 1 for `*-labels-idx1-ubyte`).

  Returns:
    An array of the declared shape, e.g. uint8[N, 28, 28] or uint8[N].

  Raises:
    DataError (a ValueError): the header is not a valid IDX header (bad magic number,
      unknown type byte, unexpected number of dimensions) or the payload size does not match
      the header.
  """
  raw = _read_bytes(path)
  name = os.path.basename(path)
  if len(raw) < 4:
    raise DataError(f'{path}: not an IDX file ({len(raw)} bytes, shorter than the 4-byte '
                     'magic number)')
  zero0, zero1, type_byte, ndim = raw[0], raw[1], raw[2], raw[3]
  magic = int.from_bytes(raw[:4], 'big')
  if zero0 or zero1 or type_byte not in IDX_DTYPES or ndim == 0:
    raise DataError(f'{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTNN with '
                     f'type TT in {{{", ".join(f"0x{t:02x}" for t in IDX_DTYPES)}}} and '
                     'NN >= 1 dimensions); the file is corrupt or not an IDX file')
  if expected_ndim is not None and ndim != expected_ndim:
    raise DataError(f'{path}: IDX header declares {ndim} dimensions (magic 0x{magic:08x}), '
                     f'expected {expected_ndim} for {name}')
  header_len = 4 + 4 * ndim
  if len(raw) < header_len:
    raise DataError(f'{path}: truncated IDX header ({len(raw)} bytes, need {header_len})')
  shape = struct.unpack(f'>{ndim}I', raw[4:header_len])
  dtype = IDX_DTYPES[type_byte]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  payload = len(raw) - header_len
  if payload != expected:
    raise DataError(f'{path}: IDX header declares shape {shape} of {dtype} ({expected} bytes) '
                     f'but the file holds {payload} bytes of data; the file is corrupt or '
                     'truncated')
  array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
  return array.astype(dtype.newbyteorder('='), copy=True)
