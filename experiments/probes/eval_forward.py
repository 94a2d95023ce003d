"""Images per second of the jitted eval-mode forward of a CIFAR ResNet (the deployed network;
XLA's own convolution), to set beside `torch_plain.py`'s 'eval' row; batch 128, random
inputs, median of repeats.

  python -m experiments.probes.eval_forward resnet56 projection 100 10   # arch shortcut classes repeats
"""
import sys
import time

import jax
import numpy as np

from gkt_jax import models


def main(argv):
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  shortcut = argv[2] if len(argv) > 2 else 'projection'
  num_classes = int(argv[3]) if len(argv) > 3 else 100
  repeats = int(argv[4]) if len(argv) > 4 else 10
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  model = models.build_model(arch, num_classes, shortcut=shortcut)
  variables = model.init(jax.random.key(1), x[:1], train=False)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  jax.block_until_ready(forward(variables, x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    times.append(time.perf_counter() - start)
  median = float(np.median(times))
  print(f'{arch} shortcut={shortcut} classes={num_classes} batch 128 eval forward: '
        f'{median * 1000:.1f} ms, {128 / median:.0f} images/s', flush=True)


if __name__ == '__main__':
  main(sys.argv)
