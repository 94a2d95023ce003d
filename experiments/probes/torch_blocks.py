"""Milliseconds of one CIFAR ResNet basic block per stage under PyTorch on this CPU: train-mode
forward + backward (of the output's sum) and eval forward, batch 128, the three stage shapes
of a CIFAR ResNet (16 channels at 32x32, 32 at 16x16, 64 at 8x8), stride 1, identity
shortcut; each shape timed in its own loop, medians. The stage-1/stage-3 ratio says whether
PyTorch's convolution spends the same time per FLOP at every stage (its blocks count the
same FLOPs), to set beside `python -m experiments.probes.stage_costs`.

PyTorch is not a dependency of gkt_jax; run it from its own venv (see torch_plain.py):

  /tmp/torchvenv/bin/python experiments/probes/torch_blocks.py --repeats 20 --threads 2
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = ((16, 32), (32, 16), (64, 8))  # channels, height = width


class Block(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN, plus the identity, ReLU."""

  def __init__(self, channels):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels)

  def forward(self, x):
    return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def median_ms(fn, repeats: int) -> float:
  for _ in range(3):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1000


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  train = {}
  for channels, size in SHAPES:
    block = Block(channels)
    x = torch.randn(args.batch, channels, size, size, requires_grad=True)
    train[channels] = median_ms(lambda: block(x).sum().backward(), args.repeats)
    block.eval()
    with torch.inference_mode():
      evaluation = median_ms(lambda: block(x), args.repeats)
    print(f'{channels} channels at {size}x{size}: train forward+backward {train[channels]:.2f} '
          f'ms, eval forward {evaluation:.2f} ms', flush=True)
  print(f'train, stage 1 / stage 3: {train[16] / train[64]:.2f} (same FLOPs)')


if __name__ == '__main__':
  main()
