r"""Golden values of EKD-FWSNet from the authors' own code.

Reference: github.com/cv516Buaa/EKD-FWSNet (tools/trainval_dual.py, KDCCB/models/
FWS_LW-Resnet_cifar.py, KDCCB/models/FWS_HE-LC-Resnet.py, KDCCB/utils/), imported from the tree
given by --ref; nothing of it is copied here. For each case of cases.py with reference
'EKD-FWSNet' ('ekd3': their CIFAR-10 ResNet-20 config, 3 paths; 'ekd4': their CIFAR-100
ResNet-18 config, 4 paths) this script builds their `Trainer` from the case's yaml config
(their `__init__`: their model builder, optimizer, schedule and criterion) in float64, loads
our starting weights into it (ResNet-18 at 1/16 of the width: their layers run on the
tensors they hold) and runs ONE iteration of their `Trainer.train` (forward of all paths,
their CE + KD + attention loss, backward, SGD step) on the case's batch. It writes
tests/goldens/<case>.npz: every path's logits, every loss term, the gradients, the
parameters after the step, the BatchNorm running statistics after it, and the main path's
eval-mode logits after it (the deployed network); large arrays as digests (cases.py).

What is not theirs, and why:
- torchvision, cv2, PIL, sklearn, skimage and matplotlib are stand-ins (torch_side.py): the
  code paths run here call none of them, and torchvision's wheels pin their own torch.
- Their data loaders are replaced by the case's one batch (`trainval_dual.build_dataloader`).
- Their dropout module's forward applies the case's fixed keep masks (x * mask / (1 - p),
  what nn.Dropout does with its own draws), so that ours can apply the same ones.
- The recorded BatchNorm calls give the running variance with the biased batch variance too
  (Flax's convention): stored beside theirs ('batch_stats_biased').

Rerun:

  git clone https://github.com/cv516Buaa/EKD-FWSNet /tmp/EKD-FWSNet
  git -C /tmp/EKD-FWSNet checkout 31f19bcf9dac95eeb1ab3fbd9953ae12f1f112da
  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pyyaml
  .venv/bin/python -m experiments.parity.ours --out /tmp/gkt_parity_weights.npz
  /tmp/torchvenv/bin/python experiments/parity/ekd_golden.py --ref /tmp/EKD-FWSNet \
      --weights /tmp/gkt_parity_weights.npz

(--commit names the reference's commit where --ref is not a git checkout.) Under a minute on
2 CPU cores. The tests that read the goldens: tests/test_parity_goldens.py.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys

import numpy as np
import torch
from torch import nn

import cases
import torch_side


def module_map(net: nn.Module, prefix: str) -> dict[str, str]:
  """Their module names (FWS_ResNet or FWS_ResNet_HE_LC under `prefix`) -> our paths."""
  out = {f'{prefix}.conv1': 'stem_conv', f'{prefix}.bn1': 'stem_bn'}
  four_stage = hasattr(net, 'layer4')
  heads = (('classifier', 'aux_classifier{b}') if four_stage else ('linear', 'aux_linear_{b}'))
  out[f'{prefix}.{heads[0]}'] = 'head'
  stages = 4 if four_stage else 3
  for b in range(1, stages):
    out[f'{prefix}.{heads[1].format(b=b)}'] = f'head_cm{b}'
  for theirs, ours, first in (('layer', 'stage', 1), ('aux_layer', 'aux_stage', 2)):
    for s in range(first, stages + 1):
      for j, block in enumerate(getattr(net, f'{theirs}{s}')):
        name, path = f'{prefix}.{theirs}{s}.{j}', f'{ours}{s}_block{j + 1}'
        for layer in ('conv1', 'bn1', 'conv2', 'bn2'):
          out[f'{name}.{layer}'] = f'{path}/branch/{layer}'
        if getattr(block, 'downsample', None) is not None:
          out[f'{name}.downsample.0'] = f'{path}/proj_conv'
          out[f'{name}.downsample.1'] = f'{path}/proj_bn'
  return out


def import_trainval(ref: str):
  """Their tools/trainval_dual.py as a module (it parses its flags at import)."""
  sys.argv = ['trainval_dual.py']
  spec = importlib.util.spec_from_file_location(
      'trainval_dual', os.path.join(ref, 'tools', 'trainval_dual.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class Recording(nn.Module):
  """Their criterion, recording the value of every call."""

  def __init__(self, criterion):
    super().__init__()
    self.criterion = criterion
    self.values = []

  def forward(self, logits, target):
    loss = self.criterion(logits, target)
    self.values.append(float(loss.detach()))
    return loss


def run_step(name: str, ref: str, weights: dict[str, np.ndarray]) -> dict:
  case = cases.CASES[name]
  their = import_trainval(ref)
  images, labels = cases.batch(name)
  inputs = torch_side.nchw(images)
  their.build_dataloader = lambda cfg: ([(inputs, torch.from_numpy(labels))], [])
  torch.set_default_dtype(torch.float64)
  their.args.config = os.path.join(ref, case['config'])
  cwd = os.getcwd()
  os.chdir(ref)
  try:
    trainer = their.Trainer(their.args)  # their model, optimizer, schedule, criterion
  finally:
    os.chdir(cwd)
  cfg = trainer.cfg
  assert cfg['net']['kwargs']['num_classes'] == cfg['dataloader']['num_cls'] == case['num_classes']
  net_name = cfg['net']['name']
  net = getattr(trainer.model, net_name)
  mapping = module_map(net, net_name)
  modules = dict(trainer.model.named_modules())
  torch_side.load_weights(weights, mapping, modules)
  unmapped = [n for n, _ in trainer.model.named_parameters() if n.rsplit('.', 1)[0] not in mapping]
  assert unmapped in ([], [f'{net_name}.gamma']), unmapped  # gamma: their unused `cam`

  # Their dropout module, called once per branch point in path order, with fixed masks.
  rate = net.dropout.p
  assert rate == case['method']['dropout_rate'], rate
  keep = iter([torch.from_numpy(np.ascontiguousarray(m.transpose(0, 3, 1, 2))).double()
               for m in cases.dropout_masks(name)])
  net.dropout.forward = lambda x: x * next(keep) / (1 - rate) if net.dropout.training else x
  trainer.criterion = Recording(trainer.criterion)
  outputs, kl_values, att_values = [], [], []
  kl_loss = net.KL_loss

  def recorded_kl(*args, **kwargs):
    value = kl_loss(*args, **kwargs)
    kl_values.append(float(value.detach()))
    return value

  net.KL_loss = recorded_kl
  hooks = [net.register_forward_hook(lambda m, a, out: outputs.append(
               ([z.detach().clone() for z in out[0]], float(out[1].detach())))),
           net.att_loss.register_forward_hook(lambda m, a, out: att_values.append(
               float(out.detach())))]
  bn_calls = torch_side.BatchNormCalls(mapping, modules)
  torch.manual_seed(0)
  try:
    with torch_side.recorded_backward() as backpropagated:
      trainer.train(0)
  finally:
    for h in hooks:
      h.remove()
    bn_calls.close()
  assert next(keep, None) is None  # every mask used once
  stats = torch_side.our_tree(mapping, modules, 'batch_stats')
  recorded = bn_calls.running_stats()
  record_check = torch_side.check_running_stats(recorded, stats)
  assert record_check < 1e-12, record_check
  optimizer = trainer.optimizer.param_groups[0]
  out = {
      'cfg': cfg, 'path_logits': [z.numpy() for z in outputs[0][0]],
      'kd_loss': outputs[0][1], 'kl': list(kl_values), 'att': list(att_values),
      'ce': list(trainer.criterion.values), 'loss': list(backpropagated),
      'optimizer': {k: optimizer[k] for k in ('lr', 'momentum', 'weight_decay', 'nesterov',
                                              'dampening')},
      'grads': torch_side.our_tree(mapping, modules, 'grads'),
      'params_after': torch_side.our_tree(mapping, modules, 'params'),
      'batch_stats_after': stats, 'bn': recorded, 'record_check': record_check,
      'kl_w': float(net.KL_w), 'mse_w': float(getattr(net, 'MSE_w', 1.0)), 'dropout': rate,
  }
  net.eval()
  with torch.no_grad():
    out['eval_logits'] = net(inputs)[0][0].numpy()
    biased = copy.deepcopy(net)
    biased_modules = dict(biased.named_modules())
    for theirs, ours in mapping.items():
      if ours in recorded:
        biased_modules[theirs[len(net_name) + 1:]].running_var = torch.from_numpy(
            recorded[ours]['var_biased'])
    out['eval_logits_biased'] = biased(inputs)[0][0].numpy()
  return out


def golden(name: str, step: dict, commit: str) -> tuple[dict, dict]:
  case = cases.CASES[name]
  cfg = step['cfg']
  arrays = {
      'ce': np.asarray(step['ce']), 'kl': np.asarray(step['kl']),
      'att': np.asarray(step['att']), 'kd_loss': np.asarray(step['kd_loss']),
      'loss': np.asarray(step['loss']),
  }
  arrays.update(cases.digest_tree('logits', {
      f'path{b}': z for b, z in enumerate(step['path_logits'])}))
  arrays.update(cases.digest_tree('grads', step['grads']))
  arrays.update(cases.digest_tree('params_after', step['params_after']))
  arrays.update(cases.digest_tree('batch_stats_after', step['batch_stats_after']))
  arrays.update(cases.digest_tree('batch_stats_biased', {
      f'{ours}/var': s['var_biased'] for ours, s in step['bn'].items()}))
  arrays.update(cases.digest_tree('eval', {'logits': step['eval_logits'],
                                           'logits_biased': step['eval_logits_biased']}))
  meta = {
      'case': name, 'reference': case['reference'],
      'url': cases.REFERENCES[case['reference']], 'commit': commit,
      'generator': 'experiments/parity/ekd_golden.py',
      'their_code': ('tools/trainval_dual.py Trainer (__init__, train: one iteration); '
                     f'{cfg["net"]["subname"]}; KDCCB/utils'),
      'config': case['config'], 'net': cfg['net'], 'loss_type':
          cfg['dataloader']['train']['loss_type'], 'num_cls': cfg['dataloader']['num_cls'],
      'kl_w': step['kl_w'], 'mse_w': step['mse_w'], 'dropout': step['dropout'],
      'optimizer': step['optimizer'],
      'patches': ['trainval_dual.build_dataloader: the case batch',
                  'dropout forward: the case keep masks (cases.dropout_masks)'],
      'bn_calls': {ours: s['calls'] for ours, s in step['bn'].items()},
      'bn_counts': {ours: s['counts'] for ours, s in step['bn'].items()},
      'bn_record_check': step['record_check'],
      'environment': torch_side.environment(),
  }
  return meta, arrays


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--ref', required=True, help="the authors' EKD-FWSNet tree")
  parser.add_argument('--weights', required=True, help='experiments.parity.ours output')
  parser.add_argument('--commit', default=None, help="the tree's commit (default: git's)")
  parser.add_argument('--cases', nargs='*', default=['ekd3', 'ekd4'])
  args = parser.parse_args()
  ref = os.path.abspath(args.ref)
  commit = args.commit or torch_side.git_commit(ref)
  if not commit:
    raise SystemExit(f'{ref} is not a git checkout: give --commit')
  torch_side.install_stubs()
  sys.path.insert(0, ref)
  torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
  stored = np.load(args.weights)
  for name in args.cases:
    weights = {k[len(name) + 1:]: stored[k] for k in stored.files if k.startswith(name + '/')}
    meta, arrays = golden(name, run_step(name, ref, weights), commit)
    path = torch_side.write_golden(name, meta, arrays)
    print(f'{path}: {os.path.getsize(path)} bytes; ce {np.round(arrays["ce"], 6)} '
          f'kl {arrays["kl"]} att {arrays["att"]} loss {arrays["loss"]}')


if __name__ == '__main__':
  main()
