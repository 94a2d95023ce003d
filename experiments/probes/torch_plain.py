"""Seconds per step of the authors' PyTorch CIFAR ResNet on this CPU, to set beside our JAX
training step: 'plain' = forward in train mode, cross-entropy, backward, SGD step (lr 0.1,
momentum 0.9, nesterov, weight decay 5e-4), zero_grad; 'eval' = forward in eval mode under
torch.inference_mode(). float32, random inputs [batch, 3, 32, 32] and labels; 2 warm-up steps,
then --steps timed steps each; median and mean.

The network is the stimulative-training authors' CIFAR ResNet: BasicBlock conv3x3-BN-ReLU-
conv3x3-BN plus shortcut (1x1 conv stride s + BN where the shape changes, identity otherwise;
--shortcut pad: option A, x[:, :, ::2, ::2] with zero channels on both sides), stem conv3x3
3->16 + BN + ReLU, stages 16/32/64 of (depth - 2) / 6 blocks at strides 1/2/2, global average
pool, linear head; kaiming init.

PyTorch is not a dependency of gkt_jax; run it from its own venv:

  /root/.pyenv/versions/3.11.7/bin/python -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python experiments/probes/torch_plain.py --arch resnet56 --batch 128 \
      --steps 10 --threads 2 [--channels_last] [--shortcut pad] [--format json]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {'resnet20': 20, 'resnet56': 56, 'resnet110': 110}


class PadShortcut(nn.Module):
  """Option A: subsample by the stride, pad zero channels on both sides."""

  def __init__(self, stride, pad):
    super().__init__()
    self.stride, self.pad = stride, pad

  def forward(self, x):
    s = self.stride
    return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):

  def __init__(self, in_planes, planes, stride, shortcut):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Identity()
    if stride != 1 or in_planes != planes:
      if shortcut == 'projection':
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes))
      else:
        self.shortcut = PadShortcut(stride, (planes - in_planes) // 2)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):

  def __init__(self, depth, num_classes, shortcut):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    blocks, in_planes = [], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
      for i in range(n):
        blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
        in_planes = planes
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(64, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

  def forward(self, x):
    x = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def time_steps(step, warmup, steps):
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--arch', choices=sorted(DEPTHS), default='resnet56')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--num_classes', type=int, default=100)
  parser.add_argument('--shortcut', choices=('projection', 'pad'), default='projection')
  parser.add_argument('--channels_last', action='store_true')
  parser.add_argument('--format', choices=('text', 'json'), default='text')
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
  model = CifarResNet(DEPTHS[args.arch], args.num_classes, args.shortcut).to(
      memory_format=memory_format)
  params = sum(p.numel() for p in model.parameters())
  x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=memory_format)
  y = torch.randint(0, args.num_classes, (args.batch,))
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=5e-4)

  def plain():
    model.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()

  def evaluate():
    model.eval()
    with torch.inference_mode():
      model(x)

  header = (f'{args.arch} {params / 1e6:.3f}M params ({params}), shortcut={args.shortcut}, '
            f'num_classes={args.num_classes}, batch={args.batch}, threads={args.threads}, '
            f'channels_last={args.channels_last}, torch {torch.__version__}')
  if args.format == 'text':
    print(header, flush=True)
  for name, step in (('plain', plain), ('eval', evaluate)):
    times = time_steps(step, 2, args.steps)
    mean, median = statistics.mean(times), statistics.median(times)
    if args.format == 'json':
      print(json.dumps(dict(arch=args.arch, step=name, seconds_per_step=mean,
                            median_seconds=median, images_per_second=args.batch / mean,
                            threads=args.threads, torch_version=torch.__version__,
                            shortcut=args.shortcut, num_classes=args.num_classes,
                            batch=args.batch, params=params,
                            channels_last=args.channels_last)), flush=True)
    else:
      print(f'{name:6s} median {median:.4f} s  mean {mean:.4f} s  '
            f'{args.batch / mean:8.1f} images/s', flush=True)


if __name__ == '__main__':
  main()
