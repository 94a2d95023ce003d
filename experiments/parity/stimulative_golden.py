r"""Golden values of stimulative training and ST++ from the authors' own code.

Reference: github.com/Sunshine-Ye/NIPS22-ST (train.py, models/resnet_randwidth.py), imported
from the tree given by --ref; nothing of it is copied here. For each case of cases.py with
reference 'NIPS22-ST' ('st', 'st_pp') this script builds their ResNet-50 in float64, loads our
starting weights (1/16 of the width: their layers run on the tensors they hold), and runs
ONE iteration of their `train()` (the loop that samples subnets, distils and steps their
optimizer, exactly as released) on the case's batch, with their command-line flags. It then
writes tests/goldens/<case>.npz: the logits of every pass (full network, then each subnet),
every loss term their loop backpropagates, the gradients, the parameters after their SGD
step, the BatchNorm running statistics after the step, the deployed network's eval-mode
logits, and draws of their subnet sampler; large arrays as digests (cases.py).

What is not theirs, and why:
- torchvision, PIL and co. are stand-ins (torch_side.py): torchvision's wheels pin their own
  torch. `transforms.Resize` on a tensor is bilinear `F.interpolate` without antialiasing,
  as torchvision < 0.17 ran it (the authors' era); the effect of 0.17's antialiasing is
  measured and recorded ('effects' in the golden's meta).
- Their aug_lib.py (augmentation policies these runs never call) is a stand-in too: under
  Python 3.11 it does not import (a dataclass field with a mutable default).
- `.cuda()` returns the tensor, and their model is wrapped in `nn.DataParallel` on the CPU
  (which calls the module directly).
- ST++ ('st_pp'): their loop re-applies the ImageNet `normalize` to every resized subnet
  input (already normalised by the loader), through the module global `train.normalize`;
  the golden is made with that global set to the identity, so that it holds the method (the
  double normalisation's effect is measured and recorded).
- The recorded BatchNorm calls (each train-mode call's batch mean, biased variance and count)
  give the running variance with the biased batch variance too (Flax's convention): stored
  beside theirs ('batch_stats_biased').

Rerun:

  git clone https://github.com/Sunshine-Ye/NIPS22-ST /tmp/NIPS22-ST
  git -C /tmp/NIPS22-ST checkout 89f4f65a267a913839c79ab719bbc97110404bed
  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pyyaml
  .venv/bin/python -m experiments.parity.ours --out /tmp/gkt_parity_weights.npz
  /tmp/torchvenv/bin/python experiments/parity/stimulative_golden.py --ref /tmp/NIPS22-ST \
      --weights /tmp/gkt_parity_weights.npz

(--commit names the reference's commit where --ref is not a git checkout.) About a minute on
2 CPU cores. The tests that read the goldens: tests/test_parity_goldens.py.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import random
import sys
import tempfile

import numpy as np
import torch
from torch import nn

import cases
import torch_side

STAGES = (3, 4, 6, 3)  # ResNet-50, the depth their sampler is written for


def module_map(net: nn.Module) -> dict[str, str]:
  """Their module names (models/resnet_randwidth.py `Model`) -> our variable paths."""
  out = {'features.0.0': 'stem_conv', 'features.0.1': 'stem_bn', 'classifier.0': 'head'}
  index = 0
  for s, blocks in enumerate(STAGES, 1):
    for j in range(1, blocks + 1):
      index += 1
      theirs, ours = f'features.{index}', f'stage{s}_block{j}'
      for position, layer in ((0, 'conv1'), (1, 'bn1'), (3, 'conv2'), (4, 'bn2'), (6, 'conv3'),
                              (7, 'bn3')):
        out[f'{theirs}.body.{position}'] = f'{ours}/branch/{layer}'
      if hasattr(net.features[index], 'shortcut'):
        out[f'{theirs}.shortcut.0'] = f'{ours}/proj_conv'
        out[f'{theirs}.shortcut.1'] = f'{ours}/proj_bn'
  return out


def import_train(ref: str, argv: list[str]):
  """Their train.py as a fresh module, its flags parsed from `argv` (it reads them, and its
  yaml config relative to the working directory, at import)."""
  for name in [n for n in sys.modules if n == 'train' or n.split('.')[0] in ('models', 'utils')]:
    del sys.modules[name]
  sys.argv = ['train.py'] + argv
  cwd = os.getcwd()
  os.chdir(ref)
  try:
    return importlib.import_module('train')
  finally:
    os.chdir(cwd)


class RecordingCrossEntropy(nn.CrossEntropyLoss):
  def __init__(self):
    super().__init__()
    self.values = []

  def forward(self, logits, target):
    loss = super().forward(logits, target)
    self.values.append(float(loss.detach()))
    return loss


def run_step(name: str, ref: str, weights: dict[str, np.ndarray], workdir: str, *,
             renormalize: bool = False, antialias: bool = False) -> dict:
  """One iteration of their train() on the case; returns what it computed (our names)."""
  case = cases.CASES[name]
  their = import_train(ref, case['their_args'] + ['--exp', workdir])
  torch.set_default_dtype(torch.float64)
  net = importlib.import_module(their.FLAGS.model).Model(res_depth=50,
                                                         num_classes=case['num_classes'])
  mapping = module_map(net)
  modules = dict(net.named_modules())
  torch_side.load_weights(weights, mapping, modules)
  unmapped = [n for n, _ in net.named_parameters() if n.rsplit('.', 1)[0] not in mapping]
  assert not unmapped, unmapped
  if not renormalize:
    their.normalize = lambda x: x
  torch_side.Resize.antialias = antialias

  images, labels = cases.batch(name)
  inputs = torch_side.nchw(images)
  loader = [(inputs, torch.from_numpy(labels))]
  model = nn.DataParallel(net)
  criterion = RecordingCrossEntropy()
  # As their main(): SGD with the yaml's momentum and Nesterov flag, their lr and weight
  # decay flags, their cosine schedule over --epoch * len(loader) iterations.
  optimizer = torch.optim.SGD(model.parameters(), their.args.lr, momentum=their.FLAGS.momentum,
                              weight_decay=their.args.weight_decay,
                              nesterov=their.FLAGS.nesterov)
  lr_scheduler = their.get_lr_scheduler(optimizer, loader)
  passes = []
  hook = net.register_forward_hook(lambda module, args, output: passes.append(
      (tuple(args[0].shape), list(module.depth), output.detach().clone())))
  bn_calls = torch_side.BatchNormCalls(mapping, modules)
  np.random.seed(case['numpy_seed'])
  random.seed(case['python_seed'])
  torch.manual_seed(0)
  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    with torch_side.recorded_backward() as terms:
      their.train(loader, model, criterion, optimizer, 0, lr_scheduler)
  finally:
    torch.Tensor.cuda = cuda
    hook.remove()
    bn_calls.close()

  stats = torch_side.our_tree(mapping, modules, 'batch_stats')
  recorded = bn_calls.running_stats()
  record_check = torch_side.check_running_stats(recorded, stats)
  assert record_check < 1e-12, record_check
  out = {
      'their': their, 'net': net, 'inputs': inputs, 'passes': passes, 'terms': terms,
      'ce': criterion.values, 'lr': optimizer.param_groups[0]['initial_lr'],
      'grads': torch_side.our_tree(mapping, modules, 'grads'),
      'params_after': torch_side.our_tree(mapping, modules, 'params'),
      'batch_stats_after': stats, 'bn': recorded, 'record_check': record_check,
  }
  net.eval()
  with torch.no_grad():
    out['eval_logits'] = net(inputs).numpy()
    biased = copy.deepcopy(net)
    biased_modules = dict(biased.named_modules())
    for theirs, ours in mapping.items():
      if ours in recorded:
        biased_modules[theirs].running_var = torch.from_numpy(recorded[ours]['var_biased'])
    out['eval_logits_biased'] = biased(inputs).numpy()
  return out


def sampler_counts(their, space: str, seed: int, draws: int) -> np.ndarray:
  """int64[3, 4, 6, 3]: how often their `sample(50)` drew each stage-depth combination."""
  their.args.sample_space = space
  np.random.seed(seed)
  counts = np.zeros(STAGES, np.int64)
  for _ in range(draws):
    depths = their.sample(50)
    counts[tuple(int(d) - 1 for d in depths)] += 1
  return counts


def golden(name: str, step: dict, effects: dict, commit: str) -> tuple[dict, dict]:
  case = cases.CASES[name]
  arrays = {}
  depths = np.asarray([d for _, d, _ in step['passes'][1:]], np.int64)
  keep = np.zeros((len(step['passes']), sum(STAGES)), bool)
  for k, (_, d, _) in enumerate(step['passes']):
    keep[k] = np.concatenate([np.arange(n) < dk for n, dk in zip(STAGES, d)])
  arrays['masks'], arrays['depths'] = keep, depths
  arrays['input_sides'] = np.asarray([shape[2] for shape, _, _ in step['passes']], np.int64)
  arrays['terms'] = np.asarray(step['terms'])
  arrays['ce'] = np.asarray(step['ce'])
  arrays.update(cases.digest_tree('logits', {
      f'pass{k}': logits.numpy() for k, (_, _, logits) in enumerate(step['passes'])}))
  arrays.update(cases.digest_tree('grads', step['grads']))
  arrays.update(cases.digest_tree('params_after', step['params_after']))
  arrays.update(cases.digest_tree('batch_stats_after', step['batch_stats_after']))
  arrays.update(cases.digest_tree('batch_stats_biased', {
      f'{ours}/var': s['var_biased'] for ours, s in step['bn'].items()}))
  arrays.update(cases.digest_tree('eval', {'logits': step['eval_logits'],
                                           'logits_biased': step['eval_logits_biased']}))
  for space, (seed, draws) in cases.SAMPLER_DRAWS.items():
    arrays[f'sampler/{space}'] = sampler_counts(step['their'], space, seed, draws)
  meta = {
      'case': name, 'reference': case['reference'],
      'url': cases.REFERENCES[case['reference']], 'commit': commit,
      'generator': 'experiments/parity/stimulative_golden.py',
      'their_code': 'train.py train() (one iteration), sample(); models/resnet_randwidth.py',
      'their_args': case['their_args'],
      'kl_coef': float(step['their'].args.kl_coef), 'lr': step['lr'],
      'patches': ['torch.Tensor.cuda: identity', 'nn.DataParallel on the CPU'] + (
          ['train.normalize: identity (subnet inputs are not normalised a second time)']
          if name == 'st_pp' else []),
      'bn_calls': {ours: s['calls'] for ours, s in step['bn'].items()},
      'bn_counts': {ours: s['counts'] for ours, s in step['bn'].items()},
      'bn_record_check': step['record_check'],
      'effects': effects,
      'environment': torch_side.environment(),
  }
  return meta, arrays


def effect_of(step: dict, other: dict) -> dict:
  """Relative change of the loss terms and the gradient norm from `step` to `other`."""
  terms, terms_other = np.asarray(step['terms']), np.asarray(other['terms'])
  grad = np.sqrt(sum(np.sum(g**2) for g in step['grads'].values()))
  diff = np.sqrt(sum(np.sum((g - other['grads'][k])**2) for k, g in step['grads'].items()))
  return {'subnet_terms_max_relative_change':
              float(np.max(np.abs(terms_other[1:] - terms[1:]) / np.abs(terms[1:]))),
          'gradient_relative_change': float(diff / grad)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--ref', required=True, help="the authors' NIPS22-ST tree")
  parser.add_argument('--weights', required=True, help='experiments.parity.ours output')
  parser.add_argument('--commit', default=None, help="the tree's commit (default: git's)")
  parser.add_argument('--cases', nargs='*', default=['st', 'st_pp'])
  args = parser.parse_args()
  ref = os.path.abspath(args.ref)
  commit = args.commit or torch_side.git_commit(ref)
  if not commit:
    raise SystemExit(f'{ref} is not a git checkout: give --commit')
  # aug_lib: their augmentation library, which these runs never call and which does not
  # import under Python 3.11 (a dataclass field with a mutable default).
  torch_side.install_stubs(extra=('aug_lib',))
  sys.path.insert(0, ref)
  torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
  stored = np.load(args.weights)
  for name in args.cases:
    weights = {k[len(name) + 1:]: stored[k] for k in stored.files if k.startswith(name + '/')}
    with tempfile.TemporaryDirectory() as workdir:
      step = run_step(name, ref, weights, workdir)
      effects = {}
      if name == 'st_pp':
        effects['their_second_normalisation_of_subnet_inputs'] = effect_of(
            step, run_step(name, ref, weights, workdir, renormalize=True))
        effects['antialiased_resize_torchvision_0.17'] = effect_of(
            step, run_step(name, ref, weights, workdir, antialias=True))
      torch_side.Resize.antialias = False
      meta, arrays = golden(name, step, effects, commit)
      path = torch_side.write_golden(name, meta, arrays)
    print(f'{path}: {os.path.getsize(path)} bytes; terms {np.round(arrays["terms"], 6)}; '
          f'effects {effects}')


if __name__ == '__main__':
  main()
