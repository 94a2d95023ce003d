"""ResKD (our reading): chained logits, frozen stages, adaptive stopping, cost, the chain."""

import json
import os

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from experiments.configs import reskd_chain as chain_config
from gkt_jax import evaluate, methods, models
from gkt_jax.evaluate import adaptive
from gkt_jax.methods import reskd
from gkt_jax.pipelines import reskd_chain

NUM_CLASSES = 4


def _net(arch='resnet8', width=0.25, seed=0, side_dim=0):
  model = models.build_model(arch, NUM_CLASSES, width_multiplier=width)
  if side_dim:
    model = models.with_side_input(model, side_dim)
  images = jnp.zeros((2, 8, 8, 3))
  variables = model.init(jax.random.key(seed), images, train=False)
  # Shift the head so that nets differ clearly and give non-trivial logits.
  variables = jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(jax.random.key(seed + 100), x.shape), variables)
  return model, variables


def _images(n=6, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 8, 8, 3))


def _res_method(nets, side=False, target='logits'):
  """A res-student method with frozen teacher, student and one earlier res-student."""
  # Settings built directly are not checked (`read` checks a config): the stand-in names
  # need no runs on disk, since the networks are attached below.
  settings = reskd.ResKDSettings(teacher='t', student='s', res_students=('r1',),
                                 residual_target=target, alpha=1.0, temperature=4.0)
  model, _ = _net(seed=9, side_dim=nets['student'][0].stage_widths[-1] if side else 0)
  method = methods.REGISTRY['reskd'](settings, model)
  method.student_features = side
  method.attach_fixed({'teacher': [nets['teacher']], 'student': [nets['student']],
                        'res': [nets['r1']]})
  return method


def _frozen_nets():
  return {'teacher': _net('resnet20', 0.5, seed=1), 'student': _net('resnet8', 0.5, seed=2),
          'r1': _net(seed=3)}


class ChainTest(parameterized.TestCase):

  def test_combined_logits_are_the_sum_of_stage_logits(self):
    nets = _frozen_nets()
    images = _images()
    r2 = _net(seed=4)
    stage = reskd.chain_logits(nets['student'], [nets['r1'], r2], images)
    z_s = nets['student'][0].apply(nets['student'][1], images)[0]
    r = [m.apply(v, images)[0] for m, v in (nets['r1'], r2)]
    np.testing.assert_allclose(stage, jnp.stack([z_s] + r), atol=1e-6)
    np.testing.assert_allclose(adaptive.combined_logits(stage)[-1], z_s + r[0] + r[1],
                               rtol=1e-5, atol=1e-5)
    # The res-student method's deployed prediction: C_{k-1} + r_k.
    method = _res_method(nets)
    own = _net(seed=9)[1]
    variables = {**own, 'fixed': method.fixed_inputs()}
    want = z_s + r[0] + method.model.apply(own, images)[0]
    np.testing.assert_allclose(method.predict(variables, images), want, rtol=1e-5, atol=1e-5)

  def test_the_frozen_student_runs_once_per_step(self):
    nets = _frozen_nets()
    method = _res_method(nets)
    student = nets['student'][0]
    params, stats = _net(seed=9)[1]['params'], _net(seed=9)[1]['batch_stats']
    calls = []

    def count(next_fun, args, kwargs, context):
      module = context.module
      if (context.method_name == '__call__' and module.scope.path == ()
          and tuple(module.stage_sizes) == (1, 1, 1)
          and tuple(module.stage_widths) == tuple(student.stage_widths)):
        calls.append(1)
      return next_fun(*args, **kwargs)

    batch = {'images': _images(), 'labels': jnp.arange(6) % NUM_CLASSES,
             'fixed': method.fixed_inputs()}
    with nn.intercept_methods(count):
      jax.eval_shape(method.gradients, params, stats, batch, jax.random.key(0), {})
    self.assertLen(calls, 1)  # its logits and its pre-logits from one pass

  @parameterized.parameters('logits', 'kd')
  def test_frozen_stages_receive_no_gradient(self, target):
    nets = _frozen_nets()
    method = _res_method(nets, target=target)
    params, stats = _net(seed=9)[1]['params'], _net(seed=9)[1]['batch_stats']
    images, labels = _images(), jnp.arange(6) % NUM_CLASSES

    def loss_of_frozen(frozen):
      batch = {'images': images, 'labels': labels, 'fixed': frozen}
      grads, (_, _, m) = method.gradients(params, stats, batch, jax.random.key(0), {})
      return m['loss'] + sum(jnp.sum(g) for g in jax.tree.leaves(grads))

    frozen = method.fixed_inputs()
    grads_frozen = jax.grad(loss_of_frozen)(frozen)
    self.assertEqual(float(max(jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grads_frozen))), 0.0)
    grads, _ = method.gradients(params, stats, {'images': images, 'labels': labels,
                                                'fixed': frozen}, jax.random.key(0), {})
    # The gradients (hence the optimizer) cover the res-student alone.
    self.assertEqual(jax.tree.structure(grads), jax.tree.structure(params))
    self.assertGreater(float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads))), 0.0)

  def test_stage_losses_equal_hand_values(self):
    rng = np.random.default_rng(0)
    r, z_t, z_prev = (rng.normal(size=(5, NUM_CLASSES)).astype(np.float32) for _ in range(3))
    labels = np.arange(5) % NUM_CLASSES
    method = _res_method(_frozen_nets(), target='logits')
    np.testing.assert_allclose(method.stage_loss(r, z_t, z_prev, labels),
                               ((r - (z_t - z_prev)) ** 2).mean(-1), rtol=1e-6)
    method.residual_target = 'kd'

    def log_softmax(x):
      x = x - x.max(-1, keepdims=True)
      return x - np.log(np.exp(x).sum(-1, keepdims=True))

    c = z_prev + r
    ce = -log_softmax(c)[np.arange(5), labels]
    p = np.exp(log_softmax(z_t / 4))
    kl = 16 * (p * (log_softmax(z_t / 4) - log_softmax(c / 4))).sum(-1)
    np.testing.assert_allclose(method.stage_loss(r, z_t, z_prev, labels), ce + kl, rtol=1e-5)

  def test_res_student_reading_student_features(self):
    nets = _frozen_nets()
    method = _res_method(nets, side=True)
    self.assertEqual(method.model.side_features_dim, 32)  # ResNet-8 x0.5: 64 * 0.5
    own = method.model.init(jax.random.key(5), jnp.zeros((2, 8, 8, 3)))
    images = _images()
    out = method.predict({**own, 'fixed': method.fixed_inputs()}, images)
    self.assertEqual(out.shape, (6, NUM_CLASSES))
    with self.assertRaisesRegex(ValueError, 'needs side_features'):
      method.model.apply(own, images)


class AdaptiveTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.stage_logits = np.random.default_rng(0).normal(size=(3, 50, 5)).astype(np.float32) * 3

  def test_threshold_zero_stops_at_the_student_above_one_runs_every_stage(self):
    stops = adaptive.stop_stages(self.stage_logits, 'max_prob', 0.0)
    np.testing.assert_array_equal(stops, 0)
    stops = adaptive.stop_stages(self.stage_logits, 'max_prob', 1.01)
    np.testing.assert_array_equal(stops, 2)
    np.testing.assert_array_equal(adaptive.stop_stages(self.stage_logits, 'entropy', 100.0), 0)
    np.testing.assert_array_equal(adaptive.stop_stages(self.stage_logits, 'entropy', -1.0), 2)
    preds, _ = adaptive.adaptive_predictions(self.stage_logits, 'max_prob', 1.01)
    np.testing.assert_array_equal(preds, self.stage_logits.sum(0).argmax(-1))

  def test_stops_and_cost_match_a_hand_computation(self):
    # 2 classes, 4 samples, student + 2 res-students; threshold 0.8 on max softmax.
    big, small = 3.0, 0.1  # softmax of (3, 0): 0.95 (confident); of (0.1, 0): 0.52
    z_s = [[big, 0], [small, 0], [small, 0], [0, small]]
    r_1 = [[0, 0], [big, 0], [0, 0], [0, 0]]        # sample 1 becomes confident at stage 1
    r_2 = [[0, 0], [0, 0], [0, 0], [0, big]]        # sample 3 at stage 2; sample 2 never
    stage = np.asarray([z_s, r_1, r_2], np.float32)
    preds, stops = adaptive.adaptive_predictions(stage, 'max_prob', 0.8)
    np.testing.assert_array_equal(stops, [0, 1, 2, 2])
    np.testing.assert_array_equal(preds, [0, 0, 0, 1])
    cost = adaptive.expected_cost(stops, [10.0, 2.0, 4.0], reference_flops=100.0)
    # costs per sample: 10, 12, 16, 16 -> mean 13.5 % of 100 FLOPs; worst 16 %.
    self.assertAlmostEqual(cost['expected_cost_pct'], 13.5)
    self.assertAlmostEqual(cost['worst_cost_pct'], 16.0)
    self.assertEqual(cost['reach'], [1.0, 0.75, 0.5])

  @parameterized.parameters(0.0, 0.5, 1.0)
  def test_predictor_takes_the_same_decisions(self, fast_fraction):
    nets = _frozen_nets()
    r2 = _net(seed=4, side_dim=32)
    fns = reskd_chain._stage_fns(nets['student'], [nets['r1'], r2])
    images = np.asarray(_images(40, seed=3))
    stage = reskd.chain_logits(nets['student'], [nets['r1'], r2], images)
    threshold = float(np.median(jax.nn.softmax(stage[0]).max(-1)))  # half decide at once
    predictor = adaptive.AdaptivePredictor(fns, 'max_prob', threshold,
                                           fast_path_fraction=fast_fraction)
    preds, stops = predictor(images)
    want_preds, want_stops = adaptive.adaptive_predictions(stage, 'max_prob', threshold)
    np.testing.assert_array_equal(stops, want_stops)
    np.testing.assert_array_equal(preds, want_preds)
    self.assertGreater(int((np.asarray(stops) == 0).sum()), 0)
    self.assertGreater(int((np.asarray(stops) > 0).sum()), 0)
    if fast_fraction == 1.0:  # only the undecided samples (padded to a power of two) ran
      self.assertLess(predictor.samples_run[1], len(images))


class CostTest(absltest.TestCase):

  def test_xla_flops_match_a_hand_count(self):
    class Net(nn.Module):

      @nn.compact
      def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding='VALID', use_bias=False)(x)  # 6x6x4 outputs
        return nn.Dense(5, use_bias=False)(jnp.mean(x, axis=(1, 2)))

    model = Net()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    flops = evaluate.xla_forward_flops(model.apply, variables, (8, 8, 3))
    conv = 2 * 6 * 6 * (3 * 3 * 3) * 4  # 2 x output positions x taps x channels
    dense = 2 * 4 * 5
    pooled = 6 * 6 * 4  # the mean's adds (and a division per channel): elementwise work
    self.assertBetween(flops, conv + dense, conv + dense + pooled + 4)

  def test_xla_flops_of_resnets_order_like_the_conv_count(self):
    # CIFAR ResNets ('pad' shortcuts: 3x3 convs only) on 8x8 inputs, counted by hand.
    # forward_flops counts every tap, padding included; XLA only the taps inside the input:
    # along one axis a 3x3 conv with padding 1 reads 3m - 2 of them over m outputs at
    # stride 1 (22, 10, 4 for m = 8, 4, 2), 11 at stride 2 from 8 to 4, 5 from 4 to 2.
    def conv_counts(n, widths):
      """(FLOPs over every tap, FLOPs over in-bounds taps, output elements) of the convs."""
      w1, w2, w3 = widths  # (output side, in-bounds taps per axis, c_in, c_out) per conv:
      convs = ([(8, 22, 3, w1)] + [(8, 22, w1, w1)] * (2 * n)
               + [(4, 11, w1, w2)] + [(4, 10, w2, w2)] * (2 * n - 1)
               + [(2, 5, w2, w3)] + [(2, 4, w3, w3)] * (2 * n - 1))
      return (sum(2 * side**2 * 9 * c_in * c_out for side, _, c_in, c_out in convs),
              sum(2 * taps**2 * c_in * c_out for _, taps, c_in, c_out in convs),
              sum(side**2 * c_out for side, _, _, c_out in convs))

    for arch, width, n, widths in (('resnet20', 1.0, 3, (16, 32, 64)),
                                   ('resnet8', 0.25, 1, (4, 8, 16))):
      model = _net(arch, width)[0]
      every_tap, in_bounds, elements = conv_counts(n, widths)
      head = 2 * widths[2] * NUM_CLASSES
      self.assertEqual(evaluate.forward_flops(model, (8, 8, 3)), every_tap + head)
      flops = reskd_chain.network_flops(
          model, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), (8, 8, 3))
      # Above the convolutions and the head, XLA counts the elementwise work of BatchNorm,
      # ReLU, residual adds and pooling: not derivable from the model alone (it follows
      # XLA's fusion), measured 10.3 (resnet20) and 8.0 (resnet8) FLOPs per conv output
      # element with jax 0.12 on CPU. At most 12 per element: padding taps would add
      # 138 (resnet20) and 25 per element.
      self.assertBetween(flops, in_bounds + head, in_bounds + head + 12 * elements, arch)


class PipelineTest(absltest.TestCase):

  def test_pmap_equals_jit_with_fixed_inputs(self):
    if jax.device_count() != 1:
      self.skipTest('runs in-process: needs exactly one device')
    from gkt_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    from gkt_jax.train.checkpoint import ResumeMismatchError  # pylint: disable=g-import-not-at-top
    from tests import workers  # pylint: disable=g-import-not-at-top
    root = self.create_tempdir().full_path
    teacher = os.path.join(root, 'teacher')
    small = {'model.arch': 'resnet8'}  # compiles faster than the smoke config's ResNet-20
    train_and_evaluate(workers.smoke_config('baseline', small), teacher)
    states = {}
    for parallel in ('jit', 'pmap'):
      config = workers.smoke_config('kd', {**small, 'method.teacher': teacher,
                                           'parallel': parallel})
      _, states[parallel] = train_and_evaluate(config, os.path.join(root, parallel),
                                               return_state=True)
    for a, b in zip(jax.tree.leaves(states['jit'].params), jax.tree.leaves(states['pmap'].params)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # The student's state holds the student alone: the teacher is a step input.
    self.assertNotIn('teacher', states['jit'].params)
    self.assertEqual(set(states['jit'].params), set(_net('resnet8', 1.0)[1]['params']))
    # A teacher trained again (other weights) makes the finished student stale: refused.
    train_and_evaluate(workers.smoke_config('baseline', {**small, 'total_steps': 6}), teacher)
    config = workers.smoke_config('kd', {**small, 'method.teacher': teacher})
    with self.assertRaisesRegex(ResumeMismatchError, 'other fixed networks'):
      train_and_evaluate(config, os.path.join(root, 'jit'))

  def test_smoke_chain(self):
    root = self.create_tempdir().full_path
    config = chain_config.get_config('dataset=digits,smoke,res=1')
    for name in ('teacher', 'student', 'res_student'):
      config[name].verbose = False
      config[name].plots = False
    config.analysis.thresholds = (0.0, 0.9, 1.01)
    summary = reskd_chain.run_chain(config, root, log=lambda *_: None)
    self.assertEqual([s['name'] for s in summary['stages']], ['student', 'res1'])
    sweep = {r['threshold']: r for r in summary['sweep']}
    self.assertAlmostEqual(sweep[0.0]['expected_cost_pct'], summary['student_alone']['cost_pct'])
    self.assertAlmostEqual(sweep[1.01]['expected_cost_pct'], summary['full_chain']['cost_pct'])
    self.assertAlmostEqual(sweep[1.01]['accuracy'], summary['full_chain']['accuracy'])
    self.assertTrue(summary['adaptive_predictor']['agrees_with_sweep'])
    for path in ('summary.json', 'accuracy_vs_cost.md', 'plots/accuracy_vs_cost.png'):
      self.assertTrue(os.path.exists(os.path.join(root, path)), path)
    # The res-student's run trained and checkpointed its own network only.
    with open(os.path.join(root, 'res1', 'config.json')) as f:
      res_config = json.load(f)
    self.assertEqual(res_config['method']['teacher'], os.path.join(root, 'teacher'))
    self.assertEqual(summary['teacher']['arch'], 'resnet20')


if __name__ == '__main__':
  absltest.main()
