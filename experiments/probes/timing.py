"""What the probes share: a jitted train-mode gradient of a ResNet and interleaved timing."""
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkt_jax import losses


def gradient_fn(model, variables, x, y):
  """keep_mask -> the jitted cross-entropy gradient (and BatchNorm updates) of `model` in
  train mode at `variables` on the batch (x, y); keep_mask None runs the unmasked network."""
  def loss(params, keep):
    (logits, _), updates = model.apply({'params': params,
                                        'batch_stats': variables['batch_stats']},
                                       x, keep_mask=keep, train=True, mutable=['batch_stats'])
    return jnp.mean(losses.cross_entropy(logits, y)), updates

  grad = jax.jit(jax.grad(loss, has_aux=True))
  return lambda keep=None: grad(variables['params'], keep)


def interleaved_medians(calls: dict, repeats: int,
                        first_calls: dict | None = None) -> dict[str, float]:
  """{name: (fn, arg)} -> {name: median seconds of fn(arg)}: each run once first (compiled),
  then `repeats` rounds calling every fn in turn, so a slow spell of the machine hits all.
  `first_calls`, where given, receives {name: seconds of that first call} (trace, compile
  and one run)."""
  for name, (fn, arg) in calls.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(arg))
    if first_calls is not None:
      first_calls[name] = time.perf_counter() - start
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, (fn, arg) in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(arg))
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(ts)) for name, ts in times.items()}
