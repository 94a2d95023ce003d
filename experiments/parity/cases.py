"""The golden cases: networks, batches and settings on which the authors' code and ours run.

numpy only: the generators import this file from a PyTorch virtual environment (as a plain
module next to them), the tests as `experiments.parity.cases`. Everything both sides must
agree on is defined here once: the batch, the dropout masks, the settings on each side, and
the digest that keeps a golden file small.

A digest replaces an array of more than FULL_LIMIT entries by its L2 norm and PROBES
projections onto fixed vectors with entries in [-0.5, 0.5) (an integer hash of the index,
exact in float64 on every machine): a tensor that differs anywhere changes its projections
unless the difference is orthogonal to all of them. Smaller arrays are stored whole.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN_DIR = os.path.join(REPO, 'tests', 'goldens')
FULL_LIMIT = 16
PROBES = 4

REFERENCES = {
    'NIPS22-ST': 'https://github.com/Sunshine-Ye/NIPS22-ST',
    'EKD-FWSNet': 'https://github.com/cv516Buaa/EKD-FWSNet',
}

# Their ResNet-50 (models/resnet_randwidth.py) and ours at 1/16 of the width: the authors'
# modules take any narrower weights (each layer's forward uses the weight tensor it holds),
# so their code runs on our initial weights unchanged. Their subnet sampler is written for
# ResNet-50's stages (train.py `sample(50)`), hence the depth.
_ST_MODEL = dict(arch='resnet50', width_multiplier=1 / 16, stem='imagenet')

CASES = {
    # Stimulative training: the full network and two prefix subnets drawn by their sampler
    # over the whole space, T = 2 and a KL weight of 0.7 (so that a lost T^2 or weight shows),
    # their SGD (Nesterov 0.9, weight decay 1e-4, lr 0.2).
    'st': dict(
        reference='NIPS22-ST', model=_ST_MODEL, num_classes=10, batch=4, side=32,
        init_seed=0, data_seed=10, numpy_seed=0, python_seed=0,
        their_args=['--multi_Snet', '2', '--Temp', '2', '--kl_coef', '0.7', '--lr', '0.2',
                    '--weight_decay', '0.0001', '--epoch', '200'],
        method=dict(name='stimulative', n_sub=2, temperature=2.0, kl_weight=0.7,
                    bn_stats='every_pass'),
        optim=dict(lr=0.2, schedule='cosine', momentum=0.9, nesterov=True, weight_decay=1e-4),
        total_steps=200),
    # ST++: normalised logits before CE and KL (their layer_norm is written for 1000 classes),
    # six subnets from the ResNet-50 'space3' rule (M = 1, 2, 4, 1), every subnet's input
    # resized without antialiasing; T = 2 and a KL weight of 0.7 again (ST++ trains with 1
    # and 1). Dtrans7 draws random.randint(int(crop * mini_size), crop):
    # with --train_crop_size 20 --mini_size 1.0 every draw is 20, so their cumulative resizing
    # (each subnet resizes the previous subnet's input) resizes once, 32 -> 20, then 20 -> 20
    # (an identity), and ours (every subnet from the batch) is comparable.
    'st_pp': dict(
        reference='NIPS22-ST', model=_ST_MODEL, num_classes=1000, batch=4, side=32,
        init_seed=1, data_seed=11, numpy_seed=1, python_seed=1,
        their_args=['--norm_kd', '--multi_Snet', '6', '--sample_space', 'space3',
                    '--Snet_Dtrans', '--Dtrans', 'Dtrans7', '--train_crop_size', '20',
                    '--mini_size', '1.0', '--Temp', '2', '--kl_coef', '0.7', '--lr', '0.2',
                    '--weight_decay', '0.0001', '--epoch', '200'],
        method=dict(name='stimulative', n_sub=6, temperature=2.0, kl_weight=0.7,
                    normalize_logits=True,
                    max_shortening=(1, 2, 4, 1), subnet_resize=True, resize_min_scale=20 / 32,
                    resize_buckets=1, bn_stats='every_pass'),
        optim=dict(lr=0.2, schedule='cosine', momentum=0.9, nesterov=True, weight_decay=1e-4),
        total_steps=200),
    # EKD-FWSNet, 3 paths: their CIFAR-10 ResNet-20 config (KL_w 15, plain CE, SGD 0.1,
    # momentum 0.9, weight decay 1e-4) at full width (their option-A shortcut pads a fixed
    # number of channels). kd_weight = KL_w / C (their KLDivLoss averages over classes too).
    'ekd3': dict(
        reference='EKD-FWSNet', config='experiments/Lightweight_ex/resnet20_FWSNet_C10.yaml',
        model=dict(arch='resnet20'), num_classes=10, batch=4, side=32, init_seed=2,
        data_seed=12, dropout_seed=22,
        dropout_shapes=((4, 32, 32, 16), (4, 16, 16, 32)),
        method=dict(name='ekd_fws', temperature=3.0, kd_weight=15 / 10, att_weight=1.0,
                    dropout_rate=0.2, attention_eps=0.0),
        optim=dict(lr=0.1, schedule='constant', momentum=0.9, nesterov=False,
                   weight_decay=1e-4),
        total_steps=1),
    # EKD-FWSNet, 4 paths: their CIFAR-100 ResNet-18 config (KL_w 100, MSE_w 0.5, label
    # smoothing 0.2 in their convention, ImageNet stem, heads without bias) at 1/16 width on
    # 64x64 inputs (their stem leaves stage 4 at 2x2: its attention map needs > 1 position).
    # Their LabelSmoothingCrossEntropy(eps) puts eps / (C - 1) on every other class, which is
    # ours with eps * C / (C - 1).
    'ekd4': dict(
        reference='EKD-FWSNet', config='experiments/High-efficiency_ex/resnet18_FWSNet_C100.yaml',
        model=dict(arch='resnet18', width_multiplier=1 / 16, stem='imagenet'), num_classes=100,
        batch=4, side=64, init_seed=3, data_seed=13, dropout_seed=23,
        dropout_shapes=((4, 16, 16, 4), (4, 8, 8, 8), (4, 4, 4, 16)),
        method=dict(name='ekd_fws', temperature=3.0, kd_weight=100 / 100, att_weight=0.5,
                    dropout_rate=0.1, label_smoothing=0.2 * 100 / 99, attention_eps=0.0),
        optim=dict(lr=0.1, schedule='constant', momentum=0.9, nesterov=False,
                   weight_decay=1e-4),
        total_steps=1),
}

# Subnet sampler draws recorded from the authors' `sample(50)` per sampling space, to set
# beside ours (numpy seed, number of draws).
SAMPLER_DRAWS = {'default': (100, 4000), 'space3': (101, 4000)}


def golden_path(name: str) -> str:
  return os.path.join(GOLDEN_DIR, f'{name}.npz')


def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
  """The case's batch: images f64[B, H, W, 3] (NHWC; the generators transpose to NCHW) and
  labels int64[B]."""
  case = CASES[name]
  rng = np.random.RandomState(case['data_seed'])
  images = rng.standard_normal((case['batch'], case['side'], case['side'], 3))
  labels = rng.randint(0, case['num_classes'], case['batch']).astype(np.int64)
  return images, labels


def dropout_masks(name: str) -> list[np.ndarray]:
  """The keep masks bool[B, H, W, C] of the case's dropout layers, in path order (the
  branch point after stage 1, stage 2, ...): both sides apply x * mask / (1 - p)."""
  case = CASES[name]
  rng = np.random.RandomState(case['dropout_seed'])
  rate = case['method']['dropout_rate']
  return [rng.random_sample(shape) >= rate for shape in case['dropout_shapes']]


def initial_weights(name: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """The case's starting variables, f64 arrays in our layout, for the flat variable paths
  and shapes of our model ('params/stem_conv/kernel', 'batch_stats/stem_bn/var', ...).

  Drawn by numpy with the scales of our initialisation: convolution kernels (HWIO) normal
  with variance 2 / fan_out, dense kernels ([in, out]) normal with variance 1 / fan_in, dense
  biases 0 (theirs: EKD's 4-stage heads have none). BatchNorm is drawn away from its
  identity start (scale in [0.5, 1.5), bias and running mean normal with std 0.2, running
  variance in [0.5, 1.5)), so that a swapped or dropped BatchNorm variable shows. Each array
  comes from its own generator, seeded by the case and its path.
  """
  case = CASES[name]
  out = {}
  for path, shape in sorted(shapes.items()):
    rng = np.random.RandomState((case['init_seed'] * 1000003 + zlib.crc32(path.encode()))
                                % 2**32)
    leaf = path.rsplit('/', 1)[-1]
    is_dense = leaf in ('kernel', 'bias') and len(shapes.get(path.rsplit('/', 1)[0]
                                                             + '/kernel', ())) == 2
    if leaf == 'kernel' and len(shape) == 4:
      value = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
    elif leaf == 'kernel' and len(shape) == 2:
      value = rng.standard_normal(shape) / np.sqrt(shape[0])
    elif leaf == 'bias' and is_dense:
      value = np.zeros(shape)
    elif leaf in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf in ('bias', 'mean'):
      value = 0.2 * rng.standard_normal(shape)
    else:
      raise ValueError(f'{path}: no rule for a variable named {leaf!r}')
    out[path] = value
  return out


def _probe(size: int, k: int) -> np.ndarray:
  """f64[size], entries in [-0.5, 0.5): an integer hash of the index (exact everywhere)."""
  index = np.arange(size, dtype=np.int64)
  hashed = (index * 2654435761 + (k + 1) * 97531 + 12345) % 4294967296
  return hashed.astype(np.float64) / 4294967296.0 - 0.5


def digest_tree(prefix: str, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The golden entries of a group of arrays ({path: array}): two arrays, an index (JSON:
  path, shape, 'full' or 'digest', offset) and the values (each array whole, or its norm and
  projections; module doc)."""
  index, chunks, offset = [], [], 0
  for path, values in sorted(flat.items()):
    values = np.asarray(values, np.float64)
    if values.size <= FULL_LIMIT:
      kind, chunk = 'full', values.reshape(-1)
    else:
      flat_values = values.reshape(-1)
      kind = 'digest'
      chunk = np.asarray([np.linalg.norm(flat_values)]
                         + [_probe(flat_values.size, k) @ flat_values for k in range(PROBES)])
    index.append([path, list(values.shape), kind, offset])
    chunks.append(chunk)
    offset += chunk.size
  return {f'{prefix}#index': np.asarray(json.dumps(index)),
          f'{prefix}#values': np.concatenate(chunks) if chunks else np.zeros(0)}


def read_tree(golden, prefix: str) -> dict[str, dict]:
  """{path: entry} of a group `digest_tree` wrote; an entry holds 'shape', 'kind' and
  'values' (the array, or its norm and projections)."""
  values = np.asarray(golden[f'{prefix}#values'])
  out = {}
  for path, shape, kind, offset in json.loads(str(golden[f'{prefix}#index'])):
    size = int(np.prod(shape)) if kind == 'full' else 1 + PROBES
    out[path] = {'shape': tuple(shape), 'kind': kind, 'values': values[offset:offset + size]}
  return out


def relative_difference(ours: np.ndarray, entry: dict) -> float:
  """max |ours - theirs| relative to the golden array's scale: for a whole array over its
  largest entry, for a digest the norm's relative difference and each projection's
  difference over |probe| * norm (the largest a projection of the array can be)."""
  ours = np.asarray(ours, np.float64)
  if ours.shape != entry['shape']:
    raise AssertionError(f'shape {ours.shape}, the golden has {entry["shape"]}')
  flat = ours.reshape(-1)
  if entry['kind'] == 'full':
    want = entry['values']
    if not want.size:
      return 0.0
    return float(np.max(np.abs(flat - want))) / max(float(np.max(np.abs(want))), 1e-300)
  norm, projections = float(entry['values'][0]), entry['values'][1:]
  scale = max(norm, 1e-300)
  worst = abs(float(np.linalg.norm(flat)) - norm) / scale
  for k, want in enumerate(projections):
    probe = _probe(flat.size, k)
    worst = max(worst, abs(float(probe @ flat) - float(want))
                / (float(np.linalg.norm(probe)) * scale))
  return worst


def meta(golden) -> dict:
  return json.loads(str(golden['meta']))


def flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  """{'a/b/c': leaf} of a nested dict."""
  out = {}
  for key, value in tree.items():
    path = f'{prefix}/{key}' if prefix else key
    if isinstance(value, dict) or hasattr(value, 'items'):
      out.update(flatten(dict(value), path))
    else:
      out[path] = value
  return out
