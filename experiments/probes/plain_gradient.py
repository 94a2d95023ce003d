"""The jitted gradient of the plain (unmasked) ResNet-56 with each convolution implementation,
batch 128, 32x32x3, train mode; 7 interleaved repeats, medians, over 'canonical'. Blocks
separated by optimization barriers (`block_barriers=True`): with 'cond', CPU's default, both
networks would run the canonical convolution.

  python -m experiments.probes.plain_gradient
"""
import jax

from experiments.probes import timing
from gkt_jax import models


def main():
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
  calls = {}
  for impl in ('canonical', 'xla'):
    model = models.build_model('resnet56', 10, shortcut='pad', conv_impl=impl,
                               block_barriers=True)
    variables = model.init(jax.random.key(2), x[:1], train=False)
    calls[impl] = (timing.gradient_fn(model, variables, x, y), None)
  medians = timing.interleaved_medians(calls, 7)
  for impl, median in medians.items():
    print(f'{impl:10s} {median * 1000:7.0f} ms  {median / medians["canonical"]:.3f}',
          flush=True)


if __name__ == '__main__':
  main()
