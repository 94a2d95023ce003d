"""The jitted gradient of the plain (unmasked) ResNet-56 with each convolution implementation,
batch 128, 32x32x3, train mode; 7 interleaved repeats, medians, over 'canonical'.

  python -m experiments.probes.plain_gradient
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import losses, models


def main():
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
  fns = {}
  for impl in ('canonical', 'xla'):
    model = models.build_model('resnet56', 10, shortcut='pad', conv_impl=impl)
    variables = model.init(jax.random.key(2), x[:1], train=False)

    def loss(params, model=model, variables=variables):
      (logits, _), updates = model.apply({'params': params,
                                          'batch_stats': variables['batch_stats']},
                                         x, train=True, mutable=['batch_stats'])
      return jnp.mean(losses.cross_entropy(logits, y)), updates

    grad = jax.jit(jax.grad(loss, has_aux=True))
    jax.block_until_ready(grad(variables['params']))
    fns[impl] = (grad, variables['params'])
  times = {impl: [] for impl in fns}
  for _ in range(7):
    for impl, (grad, params) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(grad(params))
      times[impl].append(time.perf_counter() - start)
  base = np.median(times['canonical'])
  for impl, ts in times.items():
    print(f'{impl:10s} {np.median(ts) * 1000:7.0f} ms  {np.median(ts) / base:.3f}', flush=True)


if __name__ == '__main__':
  main()
