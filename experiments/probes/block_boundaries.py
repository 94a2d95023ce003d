"""The unmasked ResNet's train-mode gradient and eval forward with each `block_barriers`
setting (True: an optimization barrier per block; 'cond': each block its own computation),
interleaved repeats in one process, medians, over True's.

  python -m experiments.probes.block_boundaries resnet56 projection 100 7
      # arch, shortcut, classes, repeats; batch 128, 32x32x3
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import losses, models

MODES = (True, 'cond')


def main(argv):
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  shortcut = argv[2] if len(argv) > 2 else 'projection'
  num_classes = int(argv[3]) if len(argv) > 3 else 100
  repeats = int(argv[4]) if len(argv) > 4 else 7
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, num_classes)
  fns = {}
  for mode in MODES:
    model = models.build_model(arch, num_classes, shortcut=shortcut, block_barriers=mode)
    variables = model.init(jax.random.key(2), x[:1], train=False)

    def loss(params, model=model, variables=variables):
      (logits, _), updates = model.apply({'params': params,
                                          'batch_stats': variables['batch_stats']},
                                         x, train=True, mutable=['batch_stats'])
      return jnp.mean(losses.cross_entropy(logits, y)), updates

    grad = jax.jit(jax.grad(loss, has_aux=True))
    forward = jax.jit(lambda v, model=model: model.apply(v, x, train=False)[0])
    fns[f'gradient, {mode}'] = (grad, variables['params'])
    fns[f'eval forward, {mode}'] = (forward, variables)
  for fn, arg in fns.values():
    jax.block_until_ready(fn(arg))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, arg) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(arg))
      times[name].append(time.perf_counter() - start)
  print(f'{arch}, shortcut {shortcut}, {num_classes} classes, batch 128, {repeats} repeats')
  for name, ts in times.items():
    base = np.median(times[name.replace("'cond'", 'True').replace('cond', 'True')])
    print(f'{name:24s} {np.median(ts) * 1000:7.1f} ms  {np.median(ts) / base:.3f}', flush=True)


if __name__ == '__main__':
  main(sys.argv)
