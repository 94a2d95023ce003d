"""2-D convolution whose backward pass is written as ordinary forward convolutions.

On CPU, XLA runs the backward convolutions it derives itself 15-80x slower when they sit inside
a `lax.cond` branch or a `lax.scan` body (docs/results.md). Every
residual block of a masked ResNet sits in a cond, and ST and GKT scan over passes, so on CPU
masked networks use `conv2d(..., impl='canonical')`: a `jax.custom_vjp` whose gradients are
computed by stride-1 forward convolutions in NHWC/HWIO form (the weight gradient with batch
and channel axes swapped), the padding and the stride's zero dilation given to the
convolution itself. The values are XLA's own gradients' to float32 rounding (tests check
them). Unmasked networks on CPU, and every network on GPU/TPU, use XLA's own convolution;
`impl='auto'` picks (`resolve_impl`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from gkt_jax.config import names

Padding = tuple[tuple[int, int], tuple[int, int]]
_DN = ('NHWC', 'HWIO', 'NHWC')
IMPLS = names.CONV_IMPLS


def resolve_impl(impl: str, masked: bool = True) -> str:
  """Checks the name and maps 'auto' to 'xla' off CPU; on CPU, to 'canonical' for a masked
  network (`masked`: its convolutions may sit in a cond or a scan, as every block of a
  ResNet does under its CPU default `block_barriers='cond'`) and to 'xla' for a flat one.
  XLA's own convolution is a little faster outside nested computations (docs/results.md;
  `python -m experiments.probes.plain_gradient`). A network that is
  differentiated inside a user's own cond or scan on CPU should set 'canonical'."""
  if impl not in IMPLS:
    raise ValueError(f'conv impl={impl!r} is not one of {IMPLS}')
  if impl == 'auto':
    return 'canonical' if jax.default_backend() == 'cpu' and masked else 'xla'
  return impl


def _forward(x, w, stride: int, padding: Padding):
  return lax.conv_general_dilated(
      x, w, window_strides=(stride, stride), padding=padding, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _canonical_conv(x, w, stride, padding):
  return _forward(x, w, stride, padding)


def _canonical_fwd(x, w, stride, padding):
  return _forward(x, w, stride, padding), (x, w)


def _canonical_bwd(stride, padding, residuals, g):
  x, w = residuals
  kh, kw = w.shape[:2]
  (ph_lo, _), (pw_lo, _) = padding
  height, width = x.shape[1:3]
  out_h, out_w = g.shape[1:3]
  # g zero-dilated by the stride, g_d[j] = g[o] at j = o * stride (0 elsewhere), spans
  # dil_h x dil_w. The zero padding and the dilation are the convolutions' own arguments
  # (window padding, lhs/rhs dilation), not lax.pad copies: with explicit copies the
  # weight gradient took 1.3-2.5x XLA's own on CPU (`python -m experiments.probes.conv`).
  dil_h, dil_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1

  # dx[i] = sum_k g_d[i + p_lo - k] w[k]: a correlation of g_d, padded so the output has the
  # input's size, with w flipped in space and its in/out channel axes swapped.
  w_flipped = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  dx = lax.conv_general_dilated(
      g, w_flipped, (1, 1),
      ((kh - 1 - ph_lo, height + ph_lo - dil_h), (kw - 1 - pw_lo, width + pw_lo - dil_w)),
      lhs_dilation=(stride, stride), dimension_numbers=_DN)

  # dw[k, ci, co] = sum_{n, j} x_pad[n, j + k, ci] g_d[n, j, co]: batch and channel axes
  # swapped so the batch is the contraction ('feature') axis of a forward conv whose
  # "kernel" is g dilated by the stride. (A negative high padding crops x's unused edge.)
  dw = lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)),  # [C_in, H, W, N]
      jnp.transpose(g, (1, 2, 0, 3)),  # [out_h, out_w, N, C_out]
      (1, 1),
      ((ph_lo, dil_h + kh - 1 - height - ph_lo), (pw_lo, dil_w + kw - 1 - width - pw_lo)),
      rhs_dilation=(stride, stride), dimension_numbers=_DN)  # -> [C_in, kh, kw, C_out]
  dw = jnp.transpose(dw, (1, 2, 0, 3))
  return dx.astype(x.dtype), dw.astype(w.dtype)


_canonical_conv.defvjp(_canonical_fwd, _canonical_bwd)


def conv2d(x: jax.Array, w: jax.Array, *, stride: int = 1, padding: Padding | None = None,
           impl: str = 'auto') -> jax.Array:
  """NHWC x HWIO convolution.

  Args:
    x: f[N, H, W, C_in].
    w: f[kh, kw, C_in, C_out].
    stride: spatial stride (same on both axes).
    padding: ((top, bottom), (left, right)); default symmetric (k - 1) // 2, as PyTorch's
      ResNets use.
    impl: 'xla' (XLA's own backward), 'canonical' (backward as forward convs), 'auto'.

  Returns:
    f[N, H_out, W_out, C_out].
  """
  if padding is None:
    padding = (((w.shape[0] - 1) // 2,) * 2, ((w.shape[1] - 1) // 2,) * 2)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if resolve_impl(impl) == 'xla':
    return _forward(x, w, stride, padding)
  return _canonical_conv(x, w, int(stride), padding)
