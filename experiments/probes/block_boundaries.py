"""The unmasked ResNet's train-mode gradient and eval forward with each `block_barriers`
setting (True: an optimization barrier per block; 'cond': each block its own computation;
False: one flat program), interleaved repeats in one process, medians, over True's; and each
one's first call (trace, compile and one run), in the order True, 'cond', False.

  python -m experiments.probes.block_boundaries resnet56 projection 100 7
      # arch, shortcut, classes, repeats; batch 128, 32x32x3
  python -m experiments.probes.block_boundaries resnet20 pad 10 21 64 8 1
      # ... then batch, image size and channels (here digits' 8x8x1 at batch 64)
"""
import sys

import jax

from experiments.probes import timing
from gkt_jax import models

MODES = (True, 'cond', False)


def main(argv):
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  shortcut = argv[2] if len(argv) > 2 else 'projection'
  num_classes = int(argv[3]) if len(argv) > 3 else 100
  repeats = int(argv[4]) if len(argv) > 4 else 7
  batch = int(argv[5]) if len(argv) > 5 else 128
  size = int(argv[6]) if len(argv) > 6 else 32
  channels = int(argv[7]) if len(argv) > 7 else 3
  x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, num_classes)
  calls = {}
  for mode in MODES:
    model = models.build_model(arch, num_classes, shortcut=shortcut, block_barriers=mode)
    variables = model.init(jax.random.key(2), x[:1], train=False)
    forward = jax.jit(lambda v, model=model: model.apply(v, x, train=False)[0])
    calls[f'gradient, {mode}'] = (timing.gradient_fn(model, variables, x, y), None)
    calls[f'eval forward, {mode}'] = (forward, variables)
  first_calls = {}
  medians = timing.interleaved_medians(calls, repeats, first_calls)
  print(f'{arch}, shortcut {shortcut}, {num_classes} classes, batch {batch}, '
        f'{size}x{size}x{channels}, {repeats} repeats; median, over True\'s, first call '
        f'(trace + compile + run)')
  for name, median in medians.items():
    base = medians[name.rsplit(', ', 1)[0] + ', True']
    print(f'{name:24s} {median * 1000:7.1f} ms  {median / base:.3f}  {first_calls[name]:5.2f} s',
          flush=True)


if __name__ == '__main__':
  main(sys.argv)
