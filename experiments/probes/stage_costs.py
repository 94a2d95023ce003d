"""What dropping a block saves, stage by stage, and the stochastic-depth time/FLOPs it implies.

The jitted train-mode gradient of a masked CIFAR ResNet (batch 128, 32x32x3, 'pad' shortcuts)
with every block kept, with `drop` consecutive blocks of one stage dropped (its last ones,
so no stride-2 block), and of the network built without those blocks (every block kept):
interleaved repeats, medians. "kept" is what `drop` blocks cost when they run, "dropped"
what they still cost when their mask drops them (0: free).

A CIFAR ResNet's stride-1 blocks all count the same FLOPs (a stage's stride-2 first block
0.75 of one), so a block that saved its FLOP share of the step would be "free"; the model
then weighs each stage's saving by the FLOPs of the blocks stochastic depth (linear decay to
0.5) is expected to drop there, assuming a stride-2 block saves in proportion to its FLOPs
(an approximation: only stride-1 blocks are dropped in the measurement):

  time ratio  = 1 - sum_s (expected dropped FLOPs of s / a block's) * saved per block of s
  FLOP ratio  = 1 - expected dropped FLOPs / the network's FLOPs

and again with "kept" in place of "saved" (dropped blocks free).

  python -m experiments.probes.stage_costs resnet56 5 5     # arch, blocks dropped, repeats
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.probes import timing
from gkt_jax import evaluate, masks, models


def stage_masks(stage_sizes, drop: int) -> dict[str, np.ndarray]:
  """{'all kept': ones, 'stage s': the last `drop` blocks of stage s dropped}."""
  cases = {'all kept': np.ones(sum(stage_sizes), bool)}
  start = 0
  for s, size in enumerate(stage_sizes):
    mask = np.ones(sum(stage_sizes), bool)
    mask[start + size - drop:start + size] = False
    cases[f'stage {s + 1}'] = mask
    start += size
  return cases


def main(argv):
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  drop = int(argv[2]) if len(argv) > 2 else 5
  repeats = int(argv[3]) if len(argv) > 3 else 5
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
  model = models.build_model(arch, 10, shortcut='pad')
  sizes = tuple(model.stage_sizes)
  if not 0 < drop < min(sizes):
    raise SystemExit(f'drop={drop}: must be in [1, {min(sizes) - 1}] for stages {sizes}')
  gradient = timing.gradient_fn(model, model.init(jax.random.key(2), x[:1], train=False), x, y)
  calls = {name: (gradient, jnp.asarray(mask)) for name, mask in stage_masks(sizes, drop).items()}
  for s in range(len(sizes)):
    smaller = model.clone(stage_sizes=tuple(n - drop * (i == s) for i, n in enumerate(sizes)))
    calls[f'stage {s + 1} built without'] = (
        timing.gradient_fn(smaller, smaller.init(jax.random.key(2), x[:1], train=False), x, y),
        jnp.ones(smaller.num_blocks, bool))
  medians = timing.interleaved_medians(calls, repeats)
  full = medians['all kept']
  fixed, per_block = evaluate.block_flops(model, x.shape[1:])
  total_flops = fixed + per_block.sum()
  dropped = 1.0 - np.asarray(masks.stochastic_depth_survival(model.num_blocks, 0.5))
  print(f'{arch}, batch 128, {drop} blocks dropped per case, {repeats} repeats')
  time_saved = time_saved_if_free = 0.0
  start = 0
  for s, size in enumerate(sizes):
    stage = slice(start, start + size)
    start += size
    share = float(per_block[stage][-1] / total_flops)  # a stride-1 block's (the ones dropped)
    saved = (full - medians[f'stage {s + 1}']) / full / drop
    kept = (full - medians[f'stage {s + 1} built without']) / full / drop
    # Blocks of the stage weighted by their FLOPs (a stride-2 first block counts less).
    expected = float(dropped[stage] @ (per_block[stage] / per_block[stage][-1]))
    time_saved += expected * saved
    time_saved_if_free += expected * kept
    print(f'stage {s + 1}: a kept block costs {kept:.4f} of the step ({kept / share:.2f}x its '
          f'FLOP share {share:.4f}), a dropped one saves {saved:.4f} (still costs '
          f'{(kept - saved) / kept:.2f} of a kept one); SD drops {float(dropped[stage].sum()):.2f}'
          f' blocks here', flush=True)
  flop_ratio = 1.0 - float(dropped @ per_block / total_flops)
  for what, saved in (('as measured', time_saved),
                      ('if dropped blocks were free', time_saved_if_free)):
    print(f'stochastic depth, expected, {what}: time {1 - saved:.3f}, FLOPs {flop_ratio:.3f}, '
          f'time/FLOPs {(1 - saved) / flop_ratio:.3f}')

if __name__ == '__main__':
  main(sys.argv)
