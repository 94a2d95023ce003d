"""Ours against the authors' own code: golden values their PyTorch code computed.

tests/goldens/<case>.npz hold what the authors' released code computes on a case of
experiments/parity/cases.py (a small network, our starting weights, a fixed batch), written by
experiments/parity/stimulative_golden.py (Sunshine-Ye/NIPS22-ST) and ekd_golden.py
(cv516Buaa/EKD-FWSNet); each records the authors' commit. Here our code runs the same step in
float64 and must agree to RTOL relative (largest difference over the golden array's scale).

Known convention differences, each made equal or measured here:
- BatchNorm running variance: PyTorch folds in the unbiased batch variance, Flax the biased
  one. The goldens hold both (the biased one recomputed from the recorded batch moments of
  every train-mode call); ours is compared with the biased one, and `_check_batch_stats`
  measures how far the authors' buffers are from it.
- EKD-FWSNet's 4-stage heads have no bias; ours do. Started at 0 they change no logit of the
  step; their gradients have no counterpart, and the test measures what one SGD step moves
  them by (the main-path export is compared with its head bias at 0).
- Label smoothing: the authors' LabelSmoothingCrossEntropy(eps) puts eps / (C - 1) on every
  other class, ours (optax) eps / C on every class: ours with eps * C / (C - 1) is theirs
  exactly, which the 'ekd4' case sets (the test measures what eps itself would change).
- EKD's attention maps: the authors divide by the bare standard deviation; ours adds
  `attention_eps` (1e-6 by default, 0 in the cases).
- Dropout draws come from each framework's generator: both sides apply the masks of
  `cases.dropout_masks` (theirs through a patched forward, ours through
  `nn.intercept_methods`).
The authors' own deviations from the method (ST++'s second normalisation of resized subnet
inputs, torchvision's antialiasing) are switched off in the generator, their effect recorded
in the golden's meta (stimulative_golden.py).
"""

import functools
import os

from absl.testing import absltest, parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.parity import cases, ours
from gkt_jax import losses, masks
from gkt_jax.methods import base
from gkt_jax.models import classmate
from gkt_jax.train import optim

RTOL = 1e-9


@functools.cache
def _golden(name: str):
  return np.load(cases.golden_path(name))


class _Differences:
  """Relative differences of ours against one golden, by what was compared."""

  def __init__(self, golden):
    self.golden = golden
    self.values: dict[str, float] = {}

  def group(self, prefix: str, flat: dict, *, skip=()):
    """Compares {path: array} with the golden group `prefix` (whose paths must be ours
    minus `skip`)."""
    entries = cases.read_tree(self.golden, prefix)
    flat = {k: v for k, v in flat.items() if k not in skip}
    unmatched = sorted(set(flat) ^ set(entries))
    if unmatched:
      raise AssertionError(f'{prefix}: ours and the golden differ in {unmatched[:5]}')
    for path, value in flat.items():
      self.values[f'{prefix}/{path}'] = cases.relative_difference(np.asarray(value),
                                                                  entries[path])

  def value(self, what: str, ours_value, theirs_value):
    ours_value, theirs_value = np.asarray(ours_value, np.float64), np.asarray(theirs_value)
    self.values[what] = float(np.max(np.abs(ours_value - theirs_value))
                              / np.max(np.abs(theirs_value)))

  def check(self, test: absltest.TestCase):
    worst = sorted(self.values.items(), key=lambda kv: -kv[1])[:5]
    test.assertLessEqual(worst[0][1], RTOL, f'largest relative differences: {worst}')
    return worst[0][1]


def _in_float64(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _check_batch_stats(test, golden, stats, diffs):
  """Running means against theirs, running variances against the biased-convention ones
  (into `diffs`); returns the convention's effect, max |theirs - ours| / |theirs| over the
  variances, and its bound."""
  after = cases.read_tree(golden, 'batch_stats_after')
  biased = cases.read_tree(golden, 'batch_stats_biased')
  test.assertEqual(set(after), set(stats))
  effect = 0.0
  for path, value in stats.items():
    if path.endswith('/mean'):
      diffs.values[f'batch_stats/{path}'] = cases.relative_difference(value, after[path])
    else:
      diffs.values[f'batch_stats/{path}'] = cases.relative_difference(value, biased[path])
      effect = max(effect, cases.relative_difference(value, after[path]))
  # Each batch's variance enters theirs n / (n - 1) times ours (n = N * H * W, 4 at a 1x1 map
  # of a batch of 4), so the two differ by at most 1 / (n - 1) of the smallest n, relative.
  smallest = min(min(counts) for counts in cases.meta(golden)['bn_counts'].values())
  return effect, 1 / (smallest - 1)


class StimulativeGoldenTest(parameterized.TestCase):
  """Sunshine-Ye/NIPS22-ST train.py: one iteration of their loop against our step."""

  def _run(self, name):
    golden = _golden(name)
    case = cases.CASES[name]
    variables = ours.initial_variables(name)
    images, labels = cases.batch(name)
    with jax.enable_x64(True):
      method = ours.method(name, jnp.float64)
      masks_run = jnp.asarray(golden['masks'])
      # The step runs the subnets their sampler drew (the samplers: test_sampler_*).
      method.masks_run = lambda key: masks_run
      params, stats = _in_float64(variables['params']), _in_float64(variables['batch_stats'])
      batch = {'images': jnp.asarray(images), 'labels': jnp.asarray(labels, jnp.int32)}
      tx, _ = optim.make_optimizer(ml_collections.ConfigDict(case['optim']),
                                   case['total_steps'])
      sides = [int(s) for s in golden['input_sides']]
      self.assertEqual(sides[0], case['side'])
      self.assertLen(set(sides[1:]), 1)

      @jax.jit
      def step(params, stats):
        grads, (new_stats, _, measurements) = method.gradients(params, stats, batch,
                                                               jax.random.key(0), {})
        updates, _ = tx.update(grads, tx.init(params), params)
        return grads, new_stats, measurements, optax.apply_updates(params, updates)

      # Each pass's train-mode logits and the deployed network's, from the flat network
      # (no conds: it compiles faster), a dropped block as a branch scaled by 0: relu(shortcut
      # + 0 * branch) is the masked block's relu(shortcut), and train-mode BatchNorm
      # normalises with the batch's moments, so the passes do not depend on each other.
      flat = method.model.clone(block_barriers=False, conv_impl='xla')

      @jax.jit
      def forwards(params, variables_after):
        def train_logits(images, scale):
          return flat.apply({'params': params, 'batch_stats': stats}, images, train=True,
                            residual_scale=scale, mutable=['batch_stats'])[0][0]

        subnet_images = batch['images']
        if sides[1] != case['side']:
          subnet_images = jax.image.resize(subnet_images, (len(images), sides[1], sides[1], 3),
                                           'bilinear', antialias=False)
        full = train_logits(batch['images'], None)
        subnet_logits = jax.vmap(lambda m: train_logits(subnet_images, m.astype(jnp.float64)))(
            masks_run[1:])
        return full, subnet_logits, flat.apply(variables_after, batch['images'], train=False)[0]

      grads, new_stats, measurements, params_after = step(params, stats)
      full, subnet_logits, deployed = forwards(
          params, {'params': params_after, 'batch_stats': new_stats})
      out = jax.tree.map(np.asarray, (grads, new_stats, measurements, params_after, full,
                                      subnet_logits, deployed))
    return golden, case, method, out

  def test_st_pp_step_equals_authors(self):
    self._check('st_pp')

  @pytest.mark.slow  # 20 s on 2 cores; ST++'s case runs the same loop with every switch on
  def test_st_step_equals_authors(self):
    self._check('st')

  def _check(self, name):
    golden, case, method, out = self._run(name)
    grads, new_stats, measurements, params_after, full, subnet_logits, deployed = out
    meta = cases.meta(golden)
    self.assertEqual(meta['reference'], 'NIPS22-ST')
    diffs = _Differences(golden)
    # Their subnet depths are prefixes: the first d_s blocks of stage s (`first_blocks_mask`).
    stage_sizes = method.stage_sizes
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(lambda d: masks.first_blocks_mask(stage_sizes, d))(
            golden['depths'])), golden['masks'][1:])
    logits = {'pass0': full, **{f'pass{k + 1}': z for k, z in enumerate(subnet_logits)}}
    diffs.group('logits', logits)
    # The loss terms their loop backpropagates: CE of the full network, then kl_coef * T^2 KL
    # of each subnet from the full network's detached logits (normalised first in ST++).
    norm = losses.normalize_logits if case['method'].get('normalize_logits') else (lambda z: z)
    temperature = case['method'].get('temperature', 1.0)
    kl_weight = case['method'].get('kl_weight', 1.0)
    with jax.enable_x64(True):
      teacher = norm(jnp.asarray(full))
      kl = [float(jnp.mean(losses.distillation_kl(norm(jnp.asarray(z)), teacher, temperature)))
            for z in subnet_logits]
      ce = float(jnp.mean(losses.cross_entropy(teacher, jnp.asarray(cases.batch(name)[1]))))
    terms = golden['terms']
    self.assertAlmostEqual(meta['kl_coef'], kl_weight)
    diffs.value('terms', [ce] + [kl_weight * k for k in kl], terms)
    diffs.value('measurements/ce/full', measurements['ce/full'], terms[0])
    diffs.value('measurements/loss', measurements['loss'], np.sum(terms))
    diffs.value('measurements/kl/level1', measurements['kl/level1'],
                np.mean(terms[1:]) / meta['kl_coef'])
    diffs.group('grads', ours_flat(grads))
    diffs.group('params_after', ours_flat(params_after))
    # BatchNorm: every pass updates the running statistics of the layers it ran, in running
    # order (bn_stats='every_pass', the authors' loop): the full network's layers once per pass,
    # a block's layers once more per subnet that keeps it.
    effect, bound = _check_batch_stats(self, golden, ours_flat(new_stats), diffs)
    eval_entries = cases.read_tree(golden, 'eval')
    diffs.values['eval/logits'] = cases.relative_difference(deployed,
                                                            eval_entries['logits_biased'])
    worst = diffs.check(self)
    self._bn_calls(golden, method, meta)
    self.assertBetween(effect, 1e-6, bound)  # the variance convention: listed, measured
    print(f'{name}: largest relative difference {worst:.2e}; biased against unbiased '
          f'running variance: {effect:.3g} relative (bound {bound:.3g})')

  @parameterized.parameters(('st', 'default'), ('st_pp', 'space3'))
  def test_sampler_draws_like_authors(self, name, space):
    # Their `sample(50)` (train.py) drew 4,000 subnets in the sampling space the case's flags
    # choose; our method, configured as the case, draws as many. Each stage-depth
    # combination must be possible for both or neither, and as frequent within 5 standard
    # deviations of the difference of two binomial frequencies.
    theirs = _golden('st')[f'sampler/{space}']
    draws = int(theirs.sum())
    method = ours.method(name)
    sizes = method.stage_sizes
    draw = jax.jit(jax.vmap(lambda k: method.sample_masks(k)))
    keep = np.asarray(draw(jax.random.split(jax.random.key(0), draws // method.n_sub + 1)))
    keep = keep.reshape(-1, sum(sizes))[:draws]
    bounds = np.cumsum((0,) + sizes)
    depths = np.stack([keep[:, a:b].sum(1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    # Prefixes: the kept blocks of stage s are its first d_s.
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(lambda d: masks.first_blocks_mask(sizes, d))(depths)), keep)
    mine = np.zeros_like(theirs)
    np.add.at(mine, tuple((depths - 1).T), 1)
    np.testing.assert_array_equal(mine > 0, theirs > 0)
    p_mine, p_theirs = mine / draws, theirs / draws
    pooled = (p_mine + p_theirs) / 2
    bound = 5 * np.sqrt(pooled * (1 - pooled) * 2 / draws)
    ratio = np.max(np.abs(p_mine - p_theirs) / np.maximum(bound, 1e-12))
    self.assertLessEqual(ratio, 1.0, f'largest |difference| / bound: {ratio:.2f}')
    print(f'{space}: largest |frequency difference| / 5 sigma = {ratio:.2f}')

  def _bn_calls(self, golden, method, meta):
    """Their layers ran 1 + (subnets keeping the block) train-mode calls."""
    runs = golden['masks'].sum(0)
    for path, calls in meta['bn_calls'].items():
      top = path.split('/')[0]
      if top.startswith('stage'):
        s, j = (int(x) for x in top[len('stage'):].split('_block'))
        index = sum(method.stage_sizes[:s - 1]) + j - 1
        self.assertEqual(calls, runs[index], path)
      else:
        self.assertEqual(calls, golden['masks'].shape[0], path)


class EKDGoldenTest(parameterized.TestCase):
  """cv516Buaa/EKD-FWSNet trainval_dual.py: one iteration of their Trainer against our step."""

  def _run(self, name):
    golden = _golden(name)
    case = cases.CASES[name]
    variables = ours.initial_variables(name)
    images, labels = cases.batch(name)
    rate = case['method']['dropout_rate']
    dropped = []

    def fixed_dropout(next_fun, args, kwargs, context):
      """Our dropout at branch point b applies the case's keep mask b (as theirs does)."""
      if isinstance(context.module, nn.Dropout) and context.method_name == '__call__':
        branch = int(context.module.name.removeprefix('drop_cm'))
        dropped.append(branch)
        return args[0] * keep[branch - 1] / (1 - rate)
      return next_fun(*args, **kwargs)

    with jax.enable_x64(True):
      keep = [jnp.asarray(m, jnp.float64) for m in cases.dropout_masks(name)]
      method = ours.method(name, jnp.float64)
      plain = ours.plain_model(name, jnp.float64)
      params, stats = _in_float64(variables['params']), _in_float64(variables['batch_stats'])
      batch = {'images': jnp.asarray(images), 'labels': jnp.asarray(labels, jnp.int32)}
      tx, _ = optim.make_optimizer(ml_collections.ConfigDict(case['optim']),
                                   case['total_steps'])
      key = jax.random.key(0)

      # The forwards beside the step run the flat network (no conds: it compiles faster).
      flat = method.model.clone(block_barriers=False, conv_impl='xla')
      plain = plain.clone(block_barriers=False, conv_impl='xla')

      @jax.jit
      def step(params, stats):
        with nn.intercept_methods(fixed_dropout):
          grads, (new_stats, _, measurements) = method.gradients(params, stats, batch, key, {})
          (_, features), _ = flat.apply(
              {'params': params, 'batch_stats': stats}, batch['images'], train=True,
              classmates=True, mutable=['batch_stats'], rngs={'dropout': key})
        terms = method.loss_terms(features['path_logits'], features['path_features'],
                                  batch['labels'])
        updates, _ = tx.update(grads, tx.init(params), params)
        params_after = optax.apply_updates(params, updates)
        # The deployed network: the main path exported as the plain ResNet.
        export = {'params': classmate.main_path(params_after),
                  'batch_stats': classmate.main_path(new_stats)}
        deployed = plain.apply(export, batch['images'], train=False)[0]
        return (grads, new_stats, measurements, params_after, features['path_logits'], terms,
                deployed, export)

      out = jax.tree.map(np.asarray, step(params, stats))
      # Every branch point's dropout, in both of our forwards, took its fixed mask.
      paths = len(method.stage_sizes)
      self.assertEqual(sorted(dropped), sorted(list(range(1, paths)) * 2))
      without_bias = None
      if paths == 4:  # their heads have no bias: ours evaluated without the step's bias
        export = out[7]
        export['params']['head']['bias'] = np.zeros_like(export['params']['head']['bias'])
        without_bias = np.asarray(jax.jit(lambda v: plain.apply(v, batch['images'],
                                                                train=False)[0])(
            _in_float64(export)))
    return golden, case, method, out, without_bias

  def test_ekd4_step_equals_authors(self):
    self._check('ekd4')

  @pytest.mark.slow  # 10 s on 2 cores; the 4-path case runs the same loss and trainer
  def test_ekd3_step_equals_authors(self):
    self._check('ekd3')

  def _check(self, name):
    golden, case, method, out, without_bias = self._run(name)
    grads, new_stats, measurements, params_after, path_logits, terms, deployed, _ = out
    meta = cases.meta(golden)
    self.assertEqual(meta['reference'], 'EKD-FWSNet')
    settings = case['method']
    num_classes = meta['num_cls']
    paths = len(method.stage_sizes)
    # Their weights in our settings: KLDivLoss(reduction='mean') also averages over the C
    # classes, so KL_w is our batch-mean weight times C; MSE_w (1 for 3 stages) is att_weight.
    self.assertAlmostEqual(settings['kd_weight'], meta['kl_w'] / num_classes)
    self.assertAlmostEqual(settings['att_weight'], meta['mse_w'])
    self.assertEqual(meta['net']['branch_num'], paths)
    self.assertAlmostEqual(meta['dropout'], settings['dropout_rate'])
    smoothing = settings.get('label_smoothing', 0.0)
    if meta['loss_type'] == 'lbs_cross_entropy':  # their eps = 0.2 on C - 1 classes
      self.assertAlmostEqual(smoothing, 0.2 * num_classes / (num_classes - 1))
    else:
      self.assertEqual(meta['loss_type'], 'cross_entropy')
      self.assertEqual(smoothing, 0.0)
    optimizer = meta['optimizer']
    self.assertEqual((optimizer['lr'], optimizer['momentum'], optimizer['weight_decay'],
                      optimizer['nesterov'], optimizer['dampening']),
                     (case['optim']['lr'], case['optim']['momentum'],
                      case['optim']['weight_decay'], case['optim']['nesterov'], 0))
    diffs = _Differences(golden)
    diffs.group('logits', {f'path{b}': z for b, z in enumerate(path_logits)})
    # Loss terms: each path's CE, their KL (T^2 KLDivLoss, a mean over B and C), their
    # attention MSE, the weighted KD term and the total their loop backpropagates.
    diffs.value('ce', terms['ce'].mean(axis=1), golden['ce'])
    diffs.value('kl', terms['kd'].mean() / num_classes, golden['kl'])
    diffs.value('att', terms['att'].mean(), golden['att'])
    diffs.value('kd_loss', settings['kd_weight'] * terms['kd'].mean()
                + settings['att_weight'] * terms['att'].mean(), golden['kd_loss'])
    diffs.value('loss', terms['loss'].mean(), golden['loss'])
    diffs.value('measurements/loss', measurements['loss'], golden['loss'])
    diffs.value('measurements/ce/full', measurements['ce/full'], golden['ce'][0])
    head_biases = ()
    if paths == 4:
      head_biases = ('head/bias',) + tuple(f'head_cm{b}/bias' for b in range(1, paths))
    diffs.group('grads', ours_flat(grads), skip=head_biases)
    diffs.group('params_after', ours_flat(params_after), skip=head_biases)
    effect, bound = _check_batch_stats(self, golden, ours_flat(new_stats), diffs)
    eval_entries = cases.read_tree(golden, 'eval')
    diffs.values['eval/main_path_export'] = cases.relative_difference(
        deployed if without_bias is None else without_bias, eval_entries['logits_biased'])
    if smoothing:  # what eps instead of eps * C / (C - 1) would change: CE of every path
      with jax.enable_x64(True):
        labels = jnp.asarray(cases.batch(name)[1])
        ce = lambda eps: np.asarray(jax.vmap(lambda z: jnp.mean(losses.cross_entropy(
            z, labels, eps)))(jnp.asarray(path_logits)))
        change = np.max(np.abs(ce(0.2) - ce(smoothing)) / ce(smoothing))
      self.assertGreater(change, 1e-4)
      print(f'{name}: label smoothing 0.2 in our convention instead of theirs: CE '
            f'{change:.3g} relative')
    if head_biases:
      moved = max(float(np.max(np.abs(ours_flat(params_after)[b]))) for b in head_biases)
      scale = float(np.max(np.abs(deployed)))
      self.assertGreater(moved, 0.0)
      print(f'{name}: head biases (theirs: none) after one step: max |b| = {moved:.3g}, '
            f'{moved / scale:.3g} of the largest deployed logit')
    worst = diffs.check(self)
    self.assertBetween(effect, 1e-6, bound)  # the variance convention: listed, measured
    print(f'{name}: largest relative difference {worst:.2e}; biased against unbiased '
          f'running variance: {effect:.3g} relative (bound {bound:.3g})')


class GoldenFilesTest(absltest.TestCase):

  def test_each_golden_records_its_source(self):
    total = 0
    for name, case in cases.CASES.items():
      path = cases.golden_path(name)
      meta = cases.meta(_golden(name))
      self.assertEqual((meta['case'], meta['reference']), (name, case['reference']))
      self.assertEqual(meta['url'], cases.REFERENCES[case['reference']])
      self.assertRegex(meta['commit'], r'^[0-9a-f]{40}$')
      self.assertTrue(os.path.exists(os.path.join(cases.REPO, meta['generator'])))
      total += os.path.getsize(path)
    self.assertLess(total, 500_000)  # bytes; the goldens are digests (cases.py)


def ours_flat(tree) -> dict:
  return {k: np.asarray(v) for k, v in cases.flatten(dict(tree)).items()}


if __name__ == '__main__':
  absltest.main()
