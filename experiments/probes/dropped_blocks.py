"""What a dropped block still costs: the jitted gradient of a masked ResNet-56 keeping the
first 3 blocks of each stage (9 of 27) against the masked ResNet-20 (the same 9 blocks, built
without the other 18) and the masked ResNet-56 with every block kept; batch 128, train mode,
interleaved repeats, medians.

  python -m experiments.probes.dropped_blocks 7     # repeats

dropped/kept: (ResNet-56 with 9 kept - ResNet-20) / (ResNet-56 all kept - ResNet-20), the
cost of a dropped block as a fraction of a kept one's (0: free).
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.probes import timing
from gkt_jax import models


def gradient_fn(arch, x, y):
  model = models.build_model(arch, 10, shortcut='pad')
  return timing.gradient_fn(model, model.init(jax.random.key(2), x[:1], train=False), x, y)


def main(repeats):
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
  first3 = np.zeros((3, 9), bool)
  first3[:, :3] = True
  cases = {'resnet20, all 9 kept': (gradient_fn('resnet20', x, y), jnp.ones(9, bool)),
           'resnet56, 9 of 27 kept': (gradient_fn('resnet56', x, y), jnp.asarray(first3.ravel())),
           'resnet56, all 27 kept': (gradient_fn('resnet56', x, y), jnp.ones(27, bool))}
  med = timing.interleaved_medians(cases, repeats)
  for name, t in med.items():
    print(f'{name:24s} {t * 1000:8.1f} ms', flush=True)
  small, nine, full = med.values()
  print(f'dropped/kept: {(nine - small) / (full - small):.3f}')


if __name__ == '__main__':
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
