"""EKD-FWSNet: the classmate branch's wiring, its loss, config.init and the main-path export."""

import os

import pytest
from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gkt_jax import data as data_lib
from gkt_jax import evaluate, losses, methods, models
from gkt_jax.models import classmate
from gkt_jax.train import checkpoint, export, train_and_evaluate
from tests import workers

NUM_CLASSES = 5


def _model(arch='resnet20', **kw):
  plain = models.build_model(arch, NUM_CLASSES, width_multiplier=0.25, **kw)
  return plain, models.with_classmates(plain, dropout_rate=0.2)


def _init(model, side=8, seed=0):
  images = jax.random.normal(jax.random.key(seed + 1), (4, side, side, 3))
  variables = model.init(jax.random.key(seed), images, train=False)
  # Non-trivial running statistics, so eval-mode BatchNorm is not the identity.
  variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
      lambda x: x + 0.1 * jax.random.uniform(jax.random.key(seed + 2), x.shape),
      variables['batch_stats'])}
  return variables, images


def _perturb(params, top_level_prefix):
  """params with every leaf under top-level names starting with the prefix shifted."""
  return {k: (jax.tree.map(lambda x: x + 0.5, v) if k.startswith(top_level_prefix) else v)
          for k, v in params.items()}


class WiringTest(parameterized.TestCase):

  def test_variables_of_three_and_four_stage_branches(self):
    for arch, kw, stages in (('resnet20', {}, 3), ('resnet18', {'stem': 'cifar'}, 4)):
      _, model = _model(arch, **kw)
      params = _init(model)[0]['params']
      aux = sorted({k.split('_block')[0] for k in params if k.startswith('aux_')})
      heads = sorted(k for k in params if k.startswith('head_cm'))
      self.assertEqual(aux, [f'aux_stage{s}' for s in range(2, stages + 1)], arch)
      self.assertEqual(heads, [f'head_cm{b}' for b in range(1, stages)], arch)
      self.assertEqual(model.path_names, ('main',) + tuple(f'cm{b}' for b in range(1, stages)))
      # Each aux block has the shapes of the trunk block it copies.
      for name in params:
        if name.startswith('aux_'):
          chex_shapes = jax.tree.map(jnp.shape, params[name])
          self.assertEqual(chex_shapes, jax.tree.map(jnp.shape, params[name[4:]]), name)

  def test_which_stages_each_path_runs(self):
    _, model = _model()
    variables, images = _init(model)

    def paths(params):
      out = model.apply({**variables, 'params': params}, images, classmates=True)[1]
      return np.asarray(out['path_logits'])

    base = paths(variables['params'])
    # path:        main   cm1 (stage1 -> aux2 -> aux3)   cm2 (stage2 -> aux3)
    expected = {'stem_': (True, True, True), 'stage1_': (True, True, True),
                'stage2_': (True, False, True), 'stage3_': (True, False, False),
                'aux_stage2_': (False, True, False), 'aux_stage3_': (False, True, True),
                'head_cm1': (False, True, False), 'head_cm2': (False, False, True)}
    for prefix, changes in expected.items():
      changed = paths(_perturb(variables['params'], prefix))
      got = tuple(not np.allclose(changed[p], base[p], atol=1e-6) for p in range(3))
      self.assertEqual(got, changes, prefix)

  def test_main_path_is_the_plain_resnet(self):
    plain, model = _model()
    variables, images = _init(model)
    main_vars = {k: classmate.main_path(v) for k, v in variables.items()}
    want = plain.apply(main_vars, images)[0]
    for classmates in (False, True):
      logits, features = model.apply(variables, images, classmates=classmates)
      np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-6)
      if classmates:
        np.testing.assert_allclose(features['path_logits'][0], want, rtol=1e-6, atol=1e-6)
        self.assertEqual(features['path_features'].shape[:2], (3, 4))
    # A keep mask acts on the trunk as in the plain network.
    mask = jnp.array([True, False, True, True, True, False, True, True, True])
    np.testing.assert_allclose(model.apply(variables, images, keep_mask=mask)[0],
                               plain.apply(main_vars, images, keep_mask=mask)[0], atol=1e-6)

  def test_shared_aux_stage_gets_the_sum_of_both_paths_gradients(self):
    _, model = _model()
    variables, images = _init(model)
    labels = jnp.arange(4) % NUM_CLASSES

    def path_loss(params, path):
      logits = model.apply({**variables, 'params': params}, images,
                           classmates=True)[1]['path_logits']
      return jnp.mean(losses.cross_entropy(logits[path], labels))

    params = variables['params']
    g1 = jax.grad(path_loss)(params, 1)
    g2 = jax.grad(path_loss)(params, 2)
    lr = 0.1
    tx = optax.sgd(lr)
    total = jax.grad(lambda p: path_loss(p, 1) + path_loss(p, 2))(params)
    updates, _ = tx.update(total, tx.init(params), params)
    stepped = optax.apply_updates(params, updates)
    for name in ('aux_stage3_block1', 'aux_stage3_block3'):  # used by cm1 and cm2
      change = jax.tree.map(lambda a, b: a - b, stepped[name], params[name])
      want = jax.tree.map(lambda a, b: -lr * (a + b), g1[name], g2[name])
      jax.tree.map(lambda c, w: np.testing.assert_allclose(c, w, rtol=1e-4, atol=1e-7),
                   change, want)
      # Both paths contribute: the stage is really shared, not two copies.
      self.assertGreater(optax.tree.norm(g1[name]), 1e-6)
      self.assertGreater(optax.tree.norm(g2[name]), 1e-6)
    # aux_stage2 is on cm1 only.
    self.assertGreater(optax.tree.norm(g1['aux_stage2_block1']), 1e-6)
    self.assertEqual(optax.tree.norm(g2['aux_stage2_block1']), 0.0)

  def test_dropout_only_in_training_and_batch_stats_per_pass(self):
    _, model = _model()
    variables, images = _init(model)
    run = lambda key: model.apply(variables, images, train=True, classmates=True,
                                  mutable=['batch_stats'], rngs={'dropout': key})
    (a, fa), stats = run(jax.random.key(0))
    (_, fb), _ = run(jax.random.key(1))
    np.testing.assert_allclose(fa['path_logits'][0], fb['path_logits'][0])  # main: no dropout
    self.assertFalse(np.allclose(fa['path_logits'][1], fb['path_logits'][1]))
    # aux_stage3 runs twice (cm1, cm2): its running mean moved twice from the old value
    # (momentum m: old -> m^2 old + ...), so it differs from one update of either pass.
    old = variables['batch_stats']['aux_stage3_block1']['branch']['bn1']['mean']
    new = stats['batch_stats']['aux_stage3_block1']['branch']['bn1']['mean']
    self.assertFalse(np.allclose(old, new))
    del a

  def test_trunk_statistics_are_the_deployed_networks_own(self):
    # The trunk runs once per step: after EKD's step its running statistics are exactly one
    # train-mode update of the plain network on the batch (no bn_stats choice arises).
    plain, model = _model()
    variables, images = _init(model)
    method = methods.get_method(ml_collections.ConfigDict({'name': 'ekd_fws'}), plain)
    batch = {'images': images, 'labels': jnp.arange(4) % NUM_CLASSES}
    _, (stats, _, _) = jax.jit(method.gradients)(variables['params'], variables['batch_stats'],
                                                 batch, jax.random.key(3), {})
    trunk = {'params': classmate.main_path(variables['params']),
             'batch_stats': classmate.main_path(variables['batch_stats'])}
    _, want = plain.apply(trunk, images, train=True, mutable=['batch_stats'])
    for got, expected in zip(jax.tree.leaves(classmate.main_path(stats)),
                             jax.tree.leaves(want['batch_stats'])):
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class LossTest(parameterized.TestCase):

  @staticmethod
  def _hand_loss(z, f, y, temperature, kd_weight, att_weight, ls):
    """numpy: CE(z0) + mean CE(zb) + w_kd T^2 KL(ens || z0) + w_att MSE(A0, mean A)."""
    z, f = np.asarray(z, np.float64), np.asarray(f, np.float64)
    num_classes = z.shape[-1]

    def log_softmax(x):
      x = x - x.max(-1, keepdims=True)
      return x - np.log(np.exp(x).sum(-1, keepdims=True))

    target = (1 - ls) * np.eye(num_classes)[y] + ls / num_classes
    ce = -(target * log_softmax(z)).sum(-1)  # [P, B]
    ens = z.mean(0)
    p = np.exp(log_softmax(ens / temperature))
    kd = temperature**2 * (p * (log_softmax(ens / temperature)
                                - log_softmax(z[0] / temperature))).sum(-1)
    a = f.sum(-1)  # [P, B, H, W]
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    std = flat.std(-1, ddof=1)[..., None, None]
    maps = (a - flat.mean(-1)[..., None, None]) / (std + 1e-6)
    att = ((maps[0] - maps.mean(0)) ** 2).mean((1, 2))
    return ce[0] + ce[1:].mean(0) + kd_weight * kd + att_weight * att, ce, kd, att

  @parameterized.parameters((0.0, 3.0, 1.5, 1.0), (0.2, 2.0, 6.0, 0.5))
  def test_equals_hand_sum(self, ls, temperature, kd_weight, att_weight):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 6, 10)).astype(np.float32) * 2
    f = rng.normal(size=(3, 6, 4, 4, 8)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    got = losses.ensemble_distillation_loss(
        z, y, path_features=f, temperature=temperature, kd_weight=kd_weight,
        att_weight=att_weight, label_smoothing=ls)
    loss, ce, kd, att = self._hand_loss(z, f, y, temperature, kd_weight, att_weight, ls)
    np.testing.assert_allclose(got['ce'], ce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got['kd'], kd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['att'], att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['loss'], loss, rtol=1e-5, atol=1e-5)
    self.assertGreater(float(np.min(kd)), 0.0)
    self.assertGreater(float(np.min(att)), 0.0)

  def test_method_loss_equals_hand_sum_on_model_outputs(self):
    config = ml_collections.ConfigDict(dict(name='ekd_fws', temperature=3.0, kd_weight=1.5,
                                            att_weight=1.0, label_smoothing=0.1))
    plain, _ = _model()
    method = methods.get_method(config, plain)
    variables, images = _init(method.model)
    labels = jnp.arange(4) % NUM_CLASSES
    _, features = method.model.apply(variables, images, classmates=True)
    terms = method.loss_terms(features['path_logits'], features['path_features'], labels)
    loss = self._hand_loss(features['path_logits'], features['path_features'], labels,
                           3.0, 1.5, 1.0, 0.1)[0]
    np.testing.assert_allclose(terms['loss'], loss, rtol=1e-4, atol=1e-5)

  @parameterized.parameters(1, 2)
  def test_attention_term_finite_for_tiny_maps(self, side):
    rng = np.random.default_rng(side)
    f = rng.normal(size=(3, 4, side, side, 8)).astype(np.float32)
    f[:, 0] = 1.0  # constant maps: a zero spatial std (the authors' code divides by it)
    z = rng.normal(size=(3, 4, 10)).astype(np.float32)
    y = np.arange(4)

    def total(z, f):
      return jnp.mean(losses.ensemble_distillation_loss(z, y, path_features=f)['loss'])

    value, grads = jax.value_and_grad(total, argnums=(0, 1))(z, f)
    self.assertTrue(np.isfinite(value))
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)))

  @pytest.mark.slow  # a ResNet-18 EKD gradient: 25 s of the default suite's 10 minutes
  def test_attention_finite_in_a_four_stage_net_with_a_1x1_last_stage(self):
    # ImageNet stem on 32x32 inputs: stage 4 is 1x1 (the released code's NaN case).
    config = ml_collections.ConfigDict(dict(name='ekd_fws', att_weight=0.5))
    method = methods.get_method(config, models.build_model(
        'resnet18', NUM_CLASSES, width_multiplier=0.125))
    variables, images = _init(method.model, side=32)
    batch = {'images': images, 'labels': jnp.arange(4) % NUM_CLASSES}
    grads, (_, _, measurements) = jax.jit(method.gradients)(
        variables['params'], variables['batch_stats'], batch, jax.random.key(0), {})
    self.assertTrue(np.isfinite(float(measurements['att'])))
    self.assertTrue(np.isfinite(float(optax.tree.norm(grads))))
    self.assertEqual(set(k for k in measurements if k.startswith('train_acc/')),
                     {'train_acc/main', 'train_acc/cm1', 'train_acc/cm2', 'train_acc/cm3',
                      'train_acc/ensemble'})

  def test_detach_teacher(self):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4, 10)).astype(np.float32)
    f = rng.normal(size=(3, 4, 2, 2, 8)).astype(np.float32)
    y = np.arange(4)
    for detach in (False, True):
      def distill(z, f):
        terms = losses.ensemble_distillation_loss(z, y, path_features=f,
                                                  detach_teacher=detach)
        return jnp.mean(terms['kd'] + terms['att'])
      gz, gf = jax.grad(distill, argnums=(0, 1))(z, f)
      # The classmates are reached only through the teacher.
      self.assertEqual(float(np.abs(gz[1:]).max()) == 0.0, detach)
      self.assertEqual(float(np.abs(gf[1:]).max()) == 0.0, detach)
      self.assertGreater(float(np.abs(gz[0]).max()), 0.0)

  def test_training_flops_about_twice_the_plain_network(self):
    # Counted by hand (2 x multiply-adds, 'pad' shortcuts: no projection convs) for the
    # CIFAR ResNet-(6n+2) at width 0.25 (stages of 4, 8, 16 channels on 32, 16, 8 pixels):
    # every path runs its stages and a head; cm1 adds aux stages 2 and 3, cm2 aux stage 3.
    def conv(side, c_in, c_out):  # a 3x3 convolution, per example
      return 2 * side * side * 9 * c_in * c_out

    for arch, n in (('resnet20', 3), ('resnet56', 9)):
      stem, c_in, stages = conv(32, 3, 4), 4, []
      for side, width in ((32, 4), (16, 8), (8, 16)):
        stages.append(conv(side, c_in, width) + (2 * n - 1) * conv(side, width, width))
        c_in = width
      head = 2 * 16 * NUM_CLASSES
      plain_flops = stem + sum(stages) + head
      branch_flops = (stages[1] + stages[2] + head) + (stages[2] + head)
      plain, model = _model(arch)
      self.assertEqual(evaluate.forward_flops(plain, (32, 32, 3)), plain_flops)
      self.assertEqual(evaluate.forward_flops(model, (32, 32, 3)), plain_flops)
      self.assertEqual(evaluate.forward_flops(model, (32, 32, 3), classmates=True),
                       plain_flops + branch_flops)
      # About twice (1.930 and 1.977): the stages cost about the same, and the branch runs
      # stage 2 once and stage 3 twice.


class InitFromTrunkTest(absltest.TestCase):

  def test_aux_stages_copy_the_trunk_heads_stay_fresh(self):
    plain, model = _model()
    trunk = _init(plain, seed=3)[0]
    fresh = _init(model, seed=4)[0]
    config = ml_collections.ConfigDict(dict(name='ekd_fws'))
    method = methods.get_method(config, plain)
    params, stats, notes = method.adapt_init_weights(trunk['params'], trunk['batch_stats'],
                                                     fresh['params'], fresh['batch_stats'])
    self.assertEqual(set(params), set(fresh['params']))
    for name in params:
      if name.startswith('aux_'):
        jax.tree.map(np.testing.assert_array_equal, params[name], trunk['params'][name[4:]])
        jax.tree.map(np.testing.assert_array_equal, stats[name], trunk['batch_stats'][name[4:]])
      elif name.startswith('head_cm'):
        jax.tree.map(np.testing.assert_array_equal, params[name], fresh['params'][name])
      else:
        jax.tree.map(np.testing.assert_array_equal, params[name], trunk['params'][name])
    self.assertIn('aux_stage2_block1 <- stage2_block1', notes)
    self.assertIn('head_cm1 (fresh)', notes)
    # An EKD checkpoint (branch included) is taken as it is.
    same, _, notes = method.adapt_init_weights(fresh['params'], fresh['batch_stats'],
                                               fresh['params'], fresh['batch_stats'])
    self.assertIs(same['aux_stage2_block1'], fresh['params']['aux_stage2_block1'])
    self.assertEqual(notes, [])


class TrainAndExportTest(absltest.TestCase):

  def test_train_evaluate_export_and_init(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, 'ekd')
    small = {'model.arch': 'resnet14'}  # 2 blocks a stage; compiles faster than ResNet-20
    config = workers.smoke_config('ekd_fws', small)
    config.evals = {'full': {'type': 'full'}, 'paths': {'type': 'classmate_paths'}}
    summary, state = train_and_evaluate(config, workdir, return_state=True)
    # Every path's accuracy, and the ensemble's (mean logits), recomputed from the final
    # checkpoint on digits' 359 test images in one batch: equal numbers of correct images.
    digits = data_lib.load_dataset('digits')
    test_images = data_lib.normalize(digits.test_images, digits.mean, digits.std)
    saved_model, saved, _ = export.load_run(workdir)
    path_logits = np.asarray(saved_model.apply(saved, test_images, classmates=True)[1][
        'path_logits'])
    path_logits = np.concatenate([path_logits, path_logits.mean(0, keepdims=True)])
    correct = (np.argmax(path_logits, -1) == digits.test_labels).sum(-1)
    for name, count in zip(('main', 'cm1', 'cm2', 'ensemble'), correct):
      self.assertAlmostEqual(summary[f'path_acc/{name}'] * len(digits.test_labels), count,
                             delta=1e-6, msg=name)
    self.assertEqual(summary['path_acc/main'], summary['full_accuracy'])
    self.assertEqual(summary['forwards_per_step'], 3)

    out = os.path.join(root, 'export')
    info = export.export_main_path(workdir, out)
    self.assertEqual(info['step'], 4)
    self.assertIn('aux_stage3_block1', info['dropped_variables'])
    model, variables = export.load_exported(out)
    self.assertIs(type(model), models.ResNet)  # no classmate branch
    channels = variables['params']['stem_conv']['kernel'].shape[2]
    baseline_params = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 8, 8, channels))))['params']
    self.assertEqual(
        sum(np.size(x) for x in jax.tree.leaves(variables['params'])),
        sum(np.size(x) for x in jax.tree.leaves(baseline_params)))
    images = jax.random.normal(jax.random.key(7), (16, 8, 8, channels))
    trained = {'params': state.params, 'batch_stats': state.batch_stats}
    ekd_model = methods.get_method(config.method, model).model
    np.testing.assert_allclose(model.apply(variables, images)[0],
                               ekd_model.apply(trained, images, classmates=True)[1][
                                   'path_logits'][0], rtol=1e-5, atol=1e-5)

    # The export starts a plain run (config.init), and it is no state to resume.
    baseline = workers.smoke_config('baseline', {**small, 'init': out, 'total_steps': 1})
    self.assertIn('full_accuracy', train_and_evaluate(baseline, os.path.join(root, 'b')))
    with self.assertRaisesRegex(checkpoint.ResumeMismatchError, 'weights only'):
      train_and_evaluate(workers.smoke_config('baseline', {**small, 'resume': out}),
                         os.path.join(root, 'c'))
    # An EKD run initialised from the plain export: aux stages start as trunk copies.
    ekd_init = workers.smoke_config('ekd_fws', {**small, 'init': out, 'total_steps': 1,
                                                'optim.lr': 0.0})
    _, init_state = train_and_evaluate(ekd_init, os.path.join(root, 'd'), return_state=True)
    jax.tree.map(np.testing.assert_array_equal, init_state.params['aux_stage2_block1'],
                 variables['params']['stage2_block1'])


if __name__ == '__main__':
  absltest.main()
