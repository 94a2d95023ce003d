"""The PyTorch side shared by the golden generators (stimulative_golden.py, ekd_golden.py).

Runs in a virtual environment with torch (not gkt_jax's): stand-ins for packages the authors'
modules import at module level but these runs never call, our weights loaded into their
modules, records of what their code computes (every train-mode BatchNorm call, every loss
that is backpropagated), and their results written in our names and layouts.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import platform
import sys
import types

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

import cases

BN_MOMENTUM = 0.1  # PyTorch's default, which every BatchNorm of both references keeps


class _Anything:
  """A stand-in object: callable, with any attribute, usable as a base class."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __call__(self, *args, **kwargs):
    return _Anything()

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Anything()

  def __mro_entries__(self, bases):
    return (object,)


class _StubModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Anything()


class Resize:
  """torchvision.transforms.Resize on a batch tensor as torchvision < 0.17 ran it: bilinear
  `F.interpolate` with half-pixel centres and no antialiasing (0.17 made antialiasing the
  default; `antialias=True` gives that)."""
  antialias = False

  def __init__(self, size, *args, **kwargs):
    del args, kwargs
    self.size = size

  def __call__(self, x):
    return F.interpolate(x, size=self.size, mode='bilinear', align_corners=False,
                         antialias=self.antialias)


class Normalize:
  def __init__(self, mean, std, inplace=False):
    del inplace
    self.mean, self.std = mean, std

  def __call__(self, x):
    mean = torch.as_tensor(self.mean, dtype=x.dtype)[:, None, None]
    std = torch.as_tensor(self.std, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


class Compose:
  def __init__(self, transforms):
    self.transforms = transforms

  def __call__(self, x):
    for t in self.transforms:
      x = t(x)
    return x


STUBBED = ('torchvision', 'torchvision.transforms', 'torchvision.datasets',
           'torchvision.models', 'PIL', 'PIL.Image', 'PIL.ImageOps', 'PIL.ImageEnhance',
           'PIL.ImageFilter', 'PIL.ImageDraw', 'PIL.ImageFile', 'cv2', 'matplotlib',
           'matplotlib.pyplot', 'sklearn', 'sklearn.manifold', 'sklearn.metrics', 'skimage')


def install_stubs(extra: tuple[str, ...] = ()) -> None:
  """Stand-ins for STUBBED (not installed: torchvision's wheels pin their own torch) and for
  `extra` modules. Only transforms.Compose, Resize and Normalize are used by the code paths
  run here."""
  for name in STUBBED + extra:
    sys.modules[name] = _StubModule(name)
    sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
  for name in STUBBED + extra:
    parent, _, child = name.rpartition('.')
    if parent:
      setattr(sys.modules[parent], child, sys.modules[name])
  transforms = sys.modules['torchvision.transforms']
  transforms.Compose, transforms.Resize, transforms.Normalize = Compose, Resize, Normalize


def git_commit(path: str) -> str | None:
  import subprocess  # pylint: disable=g-import-not-at-top
  try:
    return subprocess.run(['git', '-C', path, 'rev-parse', 'HEAD'], check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def load_weights(weights: dict[str, np.ndarray], module_map: dict[str, str],
                 modules: dict[str, nn.Module]) -> None:
  """Puts our weights (f64, our layout) into their modules (`module_map`: their module name
  -> our path). The tensors are replaced in place, so an optimizer built on the modules
  keeps its parameters; their sizes are ours (their layers compute with the tensors they
  hold). Every parameter and buffer of a mapped module but `num_batches_tracked` is set."""
  for name, ours in module_map.items():
    module = modules[name]
    get = lambda group, leaf: torch.from_numpy(np.array(weights[f'{group}/{ours}/{leaf}']))
    if isinstance(module, nn.Conv2d):
      module.weight.data = get('params', 'kernel').permute(3, 2, 0, 1).contiguous()
      assert module.bias is None, name
    elif isinstance(module, nn.BatchNorm2d):
      module.weight.data, module.bias.data = get('params', 'scale'), get('params', 'bias')
      module.running_mean = get('batch_stats', 'mean')
      module.running_var = get('batch_stats', 'var')
      assert module.momentum == BN_MOMENTUM and module.eps == 1e-5, name
    elif isinstance(module, nn.Linear):
      module.weight.data = get('params', 'kernel').T.contiguous()
      if module.bias is not None:
        module.bias.data = get('params', 'bias')
      else:  # our head's bias, which their layer lacks, must start at 0 (cases.py)
        assert not np.any(weights[f'params/{ours}/bias']), name
    else:
      raise TypeError(f'{name}: no rule for {type(module).__name__}')


def our_tree(module_map: dict[str, str], modules: dict[str, nn.Module],
             which: str) -> dict[str, np.ndarray]:
  """Their modules' parameter gradients ('grads'), parameters ('params') or running
  statistics ('batch_stats') in our names and layouts."""
  out = {}
  for name, ours in module_map.items():
    module = modules[name]
    if which == 'batch_stats':
      if isinstance(module, nn.BatchNorm2d):
        out[f'{ours}/mean'] = module.running_mean.detach().numpy().copy()
        out[f'{ours}/var'] = module.running_var.detach().numpy().copy()
      continue
    get = (lambda t: t.grad) if which == 'grads' else (lambda t: t.data)
    if isinstance(module, nn.Conv2d):
      out[f'{ours}/kernel'] = get(module.weight).permute(2, 3, 1, 0).numpy().copy()
    elif isinstance(module, nn.BatchNorm2d):
      out[f'{ours}/scale'] = get(module.weight).numpy().copy()
      out[f'{ours}/bias'] = get(module.bias).numpy().copy()
    elif isinstance(module, nn.Linear):
      out[f'{ours}/kernel'] = get(module.weight).T.numpy().copy()
      if module.bias is not None:
        out[f'{ours}/bias'] = get(module.bias).numpy().copy()
  return out


class BatchNormCalls:
  """Records every train-mode call of the BatchNorm layers in `module_map`: the batch's
  mean, biased variance and count n = N * H * W, per layer in call order."""

  def __init__(self, module_map: dict[str, str], modules: dict[str, nn.Module]):
    self.calls: dict[str, list] = {}
    self.start: dict[str, tuple] = {}
    self._handles = []
    for name, ours in module_map.items():
      module = modules[name]
      if isinstance(module, nn.BatchNorm2d):
        self.calls[ours] = []
        self.start[ours] = (module.running_mean.clone(), module.running_var.clone())
        self._handles.append(module.register_forward_pre_hook(self._hook(ours)))

  def _hook(self, ours):
    def hook(module, inputs):
      if module.training:
        x = inputs[0].detach()
        self.calls[ours].append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False),
                                 x.numel() // x.shape[1]))
    return hook

  def close(self):
    for h in self._handles:
      h.remove()

  def running_stats(self) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: 'mean' and 'var' of PyTorch's update (its unbiased batch variance, as
    their buffers hold it), 'var_biased' (the same update with the biased variance: Flax's
    convention, ours) and 'calls' (the number of train-mode calls)."""
    out = {}
    m = BN_MOMENTUM
    for ours, calls in self.calls.items():
      mean, var = (t.clone() for t in self.start[ours])
      biased = var.clone()
      for batch_mean, batch_var, n in calls:
        mean = (1 - m) * mean + m * batch_mean
        var = (1 - m) * var + m * batch_var * n / (n - 1)
        biased = (1 - m) * biased + m * batch_var
      out[ours] = {'mean': mean.numpy(), 'var': var.numpy(), 'var_biased': biased.numpy(),
                   'calls': len(calls), 'counts': [int(n) for _, _, n in calls]}
    return out


@contextlib.contextmanager
def recorded_backward():
  """Yields a list that receives the value of every scalar `.backward()` is called on."""
  values = []
  original = torch.Tensor.backward

  def backward(self, *args, **kwargs):
    values.append(float(self.detach()))
    return original(self, *args, **kwargs)

  torch.Tensor.backward = backward
  try:
    yield values
  finally:
    torch.Tensor.backward = original


def check_running_stats(recorded: dict, their: dict[str, np.ndarray]) -> float:
  """The largest relative difference between their buffers and the update recomputed from
  the recorded calls (a check of the records; about 1e-16)."""
  worst = 0.0
  for ours, stats in recorded.items():
    for leaf in ('mean', 'var'):
      want = their[f'{ours}/{leaf}']
      worst = max(worst, float(np.max(np.abs(stats[leaf] - want)) / np.max(np.abs(want))))
  return worst


def nchw(images_nhwc: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


def environment() -> dict:
  return {'torch': torch.__version__, 'numpy': np.__version__,
          'python': platform.python_version(), 'stubbed': list(STUBBED)}


def write_golden(name: str, meta: dict, arrays: dict[str, np.ndarray]) -> str:
  path = cases.golden_path(name)
  np.savez_compressed(path, meta=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
  return path
