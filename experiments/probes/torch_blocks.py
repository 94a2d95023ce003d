"""Milliseconds of one CIFAR ResNet basic block per stage under PyTorch on this CPU: train-mode
forward + backward (of the output's sum) and eval forward, batch 128, the three stage shapes
of a CIFAR ResNet (16 channels at 32x32, 32 at 16x16, 64 at 8x8), stride 1, identity
shortcut (torch_plain.py's BasicBlock); each shape timed in its own loop, medians. The
stage-1/stage-3 ratio says whether PyTorch's convolution spends the same time per FLOP at
every stage (its blocks count the same FLOPs), to set beside `python -m
experiments.probes.stage_costs`.

With --convs: one 3x3 stride-1 convolution per shape instead, its forward, input gradient
and weight gradient timed apart (`aten.convolution_backward`), to set beside `python -m
experiments.probes.conv`.

PyTorch is not a dependency of gkt_jax; run it from its own venv (see torch_plain.py):

  /tmp/torchvenv/bin/python experiments/probes/torch_blocks.py --repeats 20 --threads 2 \
      [--channels_last] [--convs]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

# Run as a script from its own venv: its directory is on the path.
from torch_plain import BasicBlock, time_steps

SHAPES = ((16, 32), (32, 16), (64, 8))  # channels, height = width


def median_ms(fn, repeats: int) -> float:
  return statistics.median(time_steps(fn, 3, repeats)) * 1000


def conv_times(channels: int, size: int, batch: int, channels_last: bool, repeats: int):
  """ms of one convolution's forward, input gradient and weight gradient."""
  layout = torch.channels_last if channels_last else torch.contiguous_format
  x, g = (torch.randn(batch, channels, size, size).contiguous(memory_format=layout)
          for _ in range(2))
  w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=layout)

  def backward(which):
    return lambda: torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, which)
  return (median_ms(lambda: F.conv2d(x, w, padding=1), repeats),
          median_ms(backward([True, False, False]), repeats),
          median_ms(backward([False, True, False]), repeats))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--channels_last', action='store_true')
  parser.add_argument('--convs', action='store_true')
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  if args.convs:
    for channels, size in SHAPES:
      forward, input_grad, weight_grad = conv_times(channels, size, args.batch,
                                                    args.channels_last, args.repeats)
      print(f'conv {size}x{size}, {channels} -> {channels}: forward {forward:.2f} ms, input '
            f'gradient {input_grad:.2f} ms, weight gradient {weight_grad:.2f} ms', flush=True)
    return
  train = {}
  for channels, size in SHAPES:
    block = BasicBlock(channels, channels, 1, 'pad')  # stride 1: the identity shortcut
    x = torch.randn(args.batch, channels, size, size)
    if args.channels_last:
      block = block.to(memory_format=torch.channels_last)
      x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def step(block=block, x=x):
      block.zero_grad(set_to_none=True)  # as a training step does: no accumulated gradients
      x.grad = None
      block(x).sum().backward()
    train[channels] = median_ms(step, args.repeats)
    block.eval()
    with torch.inference_mode():
      evaluation = median_ms(lambda: block(x), args.repeats)
    print(f'{channels} channels at {size}x{size}: train forward+backward {train[channels]:.2f} '
          f'ms, eval forward {evaluation:.2f} ms', flush=True)
  print(f'train, stage 1 / stage 3: {train[16] / train[64]:.2f} (same FLOPs)')


if __name__ == '__main__':
  main()
