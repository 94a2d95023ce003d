"""The jitted gradient of a masked ResNet (every block kept; one stochastic-depth mask) against
the unmasked network's, for each `masked_saves` policy; interleaved repeats, medians.

  python -m experiments.probes.masked_gradient resnet56 128 5 conv_outputs,nothing,all

Arguments: arch, batch, repeats, policies (ResNet.masked_saves values). The mask is
stochastic depth's (linear decay to 0.5) drawn from key 3; "time/FLOPs~" divides by the
fraction of blocks kept (the blocks of a CIFAR ResNet cost about the same).
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import losses, masks, models


def main(argv):
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  batch = int(argv[2]) if len(argv) > 2 else 128
  reps = int(argv[3]) if len(argv) > 3 else 5
  variants = argv[4].split(',') if len(argv) > 4 else ['conv_outputs', 'nothing', 'all']

  def build(saves):
    return models.build_model(arch, 10, shortcut='pad', masked_saves=saves)

  x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  base = build('conv_outputs')
  variables = base.init(jax.random.key(2), x[:1], train=False)
  L = base.num_blocks
  surv = masks.stochastic_depth_survival(L, final_survival=0.5, rule='linear')
  sd_mask = np.asarray(masks.sample_stochastic_depth(jax.random.key(3), surv))
  print('kept', int(sd_mask.sum()), 'of', L, flush=True)

  def make(model, masked):
    def loss(p, stats, keep):
      logits, upd = model.apply({'params': p, 'batch_stats': stats}, x, keep_mask=keep,
                                train=True, mutable=['batch_stats'])
      logits = logits[0]
      return jnp.mean(losses.cross_entropy(logits, y)), upd
    g = jax.jit(jax.grad(loss, has_aux=True))
    if masked:
      return lambda keep: g(variables['params'], variables['batch_stats'], keep)
    return lambda keep: g(variables['params'], variables['batch_stats'], None)

  fns = {'plain': (make(base, False), None)}
  for v in variants:
    m = build(v)
    fns[f'{v}/all_kept'] = (make(m, True), jnp.ones(L, bool))
    fns[f'{v}/sd'] = (make(m, True), jnp.asarray(sd_mask))
  first_call = {}
  for name, (fn, keep) in fns.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(keep))
    first_call[name] = time.perf_counter() - start
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, (fn, keep) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(keep))
      times[name].append(time.perf_counter() - start)
  plain = np.median(times['plain'])
  frac = sd_mask.sum() / L
  for name in fns:
    med = np.median(times[name])
    extra = (f' time/FLOPs~{med / plain / frac:.3f} (block fraction {frac:.3f})'
             if name.endswith('/sd') else '')
    print(f'{name:28s} {med * 1000:8.1f} ms  vs plain {med / plain:.3f}  '
          f'first call {first_call[name]:.1f}s{extra}', flush=True)

if __name__ == '__main__':
  main(sys.argv)
