"""One 3x3 stride-1 convolution's forward, input gradient and weight gradient on CPU, as XLA's
convolution, the canonical backward of gkt_jax.models.conv (at the top level and inside a
`lax.cond`), XLA's own weight gradient (the same two places), the canonical weight gradient
as it was before padding moved into the convolution (an explicit lax.pad copy), and matmul
formulations (im2col; 9 shifted matmuls; batch groups). Medians of repeats, ms.

  python -m experiments.probes.conv 5        # repeats
"""
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from gkt_jax.models import conv

DN = ('NHWC', 'HWIO', 'NHWC')


def forward(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)


def patches(x):
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], -1)


def forward_im2col(x, w):
  n, h, wd, c = x.shape
  return (patches(x).reshape(n * h * wd, 9 * c) @ w.reshape(9 * c, -1)).reshape(n, h, wd, -1)


def _canonical_vjp(x, w, g):
  return jax.vjp(lambda x, w: conv.conv2d(x, w, impl='canonical'), x, w)[1](g)


def input_grad(g, w):  # the canonical backward's: a forward conv with the flipped kernel
  return _canonical_vjp(jnp.zeros(g.shape[:3] + w.shape[2:3], g.dtype), w, g)[0]


def weight_grad(x, g):  # the canonical backward's: batch as the contraction axis
  w0 = jnp.zeros((3, 3, x.shape[-1], g.shape[-1]), x.dtype)
  return _canonical_vjp(x, w0, g)[1]


def weight_grad_explicit_pad(x, g):  # x padded by a lax.pad copy (what choice 1 replaced)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dw = lax.conv_general_dilated(jnp.transpose(xp, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)),
                                (1, 1), 'VALID', dimension_numbers=DN)
  return jnp.transpose(dw, (1, 2, 0, 3))


def weight_grad_xla(x, g):  # XLA's own (fast at top level, 15-80x slow inside cond/scan)
  w0 = jnp.zeros((3, 3, x.shape[-1], g.shape[-1]), x.dtype)
  return jax.vjp(lambda w: forward(x, w), w0)[1](g)[0]


def in_cond(fn):
  """fn(x, g) inside a lax.cond whose predicate is traced (XLA cannot fold it away)."""
  def wrapped(x, g, pred):
    out = jax.eval_shape(fn, x, g)
    return lax.cond(pred, fn, lambda x, g: jnp.zeros(out.shape, out.dtype), x, g)
  return wrapped


def weight_grad_9_matmuls(x, g):
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  gf = g.reshape(n * h * wd, -1)
  return jnp.stack([xp[:, i:i + h, j:j + wd, :].reshape(n * h * wd, c).T @ gf
                    for i in range(3) for j in range(3)]).reshape(3, 3, c, -1)


def weight_grad_groups(groups):
  def fn(x, g):
    split = lambda a: a.reshape(groups, a.shape[0] // groups, *a.shape[1:])
    return jax.vmap(weight_grad)(split(x), split(g)).sum(0)
  return fn


def median_ms(fn, *args, repeats):
  args = tuple(jnp.asarray(a) for a in args)  # a bool predicate is traced, not folded
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1000


def main(repeats):
  for n, h, c in [(128, 32, 16), (128, 16, 32), (128, 8, 64)]:
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, h, h, c))
    w = jax.random.normal(kw, (3, 3, c, c))
    g = jax.random.normal(kg, (n, h, h, c))
    reference = weight_grad(x, g)
    for name, fn in [('xla', weight_grad_xla), ('explicit pad', weight_grad_explicit_pad),
                     ('9 matmuls', weight_grad_9_matmuls),
                     ('4 groups', weight_grad_groups(4))]:
      np.testing.assert_allclose(fn(x, g), reference, rtol=1e-3, atol=1e-2, err_msg=name)
    gflop = 2 * n * h * h * 9 * c * c / 1e9
    rows = {'forward': median_ms(forward, x, w, repeats=repeats),
            'forward im2col': median_ms(forward_im2col, x, w, repeats=repeats),
            'input grad': median_ms(input_grad, g, w, repeats=repeats),
            'weight grad': median_ms(weight_grad, x, g, repeats=repeats),
            'weight grad explicit pad': median_ms(weight_grad_explicit_pad, x, g,
                                                  repeats=repeats),
            'weight grad in cond': median_ms(in_cond(weight_grad), x, g, True,
                                             repeats=repeats),
            'weight grad xla': median_ms(weight_grad_xla, x, g, repeats=repeats),
            'weight grad xla in cond': median_ms(in_cond(weight_grad_xla), x, g, True,
                                                 repeats=repeats),
            'weight grad 9 matmuls': median_ms(weight_grad_9_matmuls, x, g, repeats=repeats),
            'weight grad 2 groups': median_ms(weight_grad_groups(2), x, g, repeats=repeats),
            'weight grad 8 groups': median_ms(weight_grad_groups(8), x, g, repeats=repeats)}
    print(f'[{n}, {h}, {h}, {c}] -> {c}, {gflop:.2f} GFLOP each: ' +
          ', '.join(f'{k} {v:.1f} ms' for k, v in rows.items()), flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
