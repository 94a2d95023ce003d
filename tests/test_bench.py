"""The speed-study tools: experiments/bench_step.py, profile_step.py, bench_eval.py and
bench_data.py."""

from absl import app
from absl.testing import absltest, flagsaver
import jax
import numpy as np

from experiments import bench_data, bench_eval, bench_step, profile_step
from experiments.configs import common
from gkt_jax import masks
from gkt_jax.train import train_and_evaluate

# ResNet-14: two blocks per stage, so every stage has a block that subnets may drop.
_TINY = dict(arch='resnet14', batch=4, steps=1, side=8, conv_impl='auto')


def _resnet14_flops(side: int, num_classes: int = 10):
  """(fixed, per_block f64[6]) forward FLOPs per example of the CIFAR ResNet-14 (16/32/64
  channels, parameter-free shortcuts) on side x side x 3 images, counted by hand: 2 x
  multiply-adds of each 3x3 convolution at its output size, and of the head."""
  conv = lambda hw, cin, cout: 2.0 * hw * hw * 9 * cin * cout
  s1, s2, s3 = side, -(-side // 2), -(-side // 4)
  fixed = conv(s1, 3, 16) + 2.0 * 64 * num_classes
  per_block = np.array([
      2 * conv(s1, 16, 16), 2 * conv(s1, 16, 16),
      conv(s2, 16, 32) + conv(s2, 32, 32), 2 * conv(s2, 32, 32),
      conv(s3, 32, 64) + conv(s3, 64, 64), 2 * conv(s3, 64, 64)])
  return fixed, per_block


class BenchStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.rows = {name: bench_step.bench_method(name, **_TINY)
                for name in ('baseline', 'gkt', 'kd')}

  def test_one_compile_per_method_and_measurements(self):
    for name, row in self.rows.items():
      self.assertEqual(row['compiles'], 1, name)  # the timed steps reuse the first program
      self.assertGreater(row['seconds_per_step'], 0, name)
      self.assertAlmostEqual(row['images_per_second'], 4 / row['seconds_per_step'], places=3)
      self.assertGreater(row['xla_step_bytes'], 0, name)
    self.assertEqual(self.rows['gkt']['forwards_per_step'], 7)

  def test_sandwich_and_layerdrop_run_in_one_compile(self):
    # Sandwich: the full network, the smallest subnet and 2 random ones: 4 passes, one
    # program. LayerDrop: one pass.
    for name, forwards in (('sandwich', 4), ('layerdrop', 1)):
      row = bench_step.bench_method(name, **_TINY)
      self.assertEqual(row['compiles'], 1, name)
      self.assertEqual(row['forwards_per_step'], forwards, name)

  def test_flops(self):
    plain = self.rows['baseline']['plain_flops_per_example']
    self.assertAlmostEqual(self.rows['baseline']['flops_per_example'], plain)
    # kd: the student's forward and backward (3 forwards) + the frozen teacher's forward.
    self.assertAlmostEqual(self.rows['kd']['flops_per_example'] / plain, 4 / 3)

  def test_gkt_flops_count_the_blocks_its_subnets_keep(self):
    # The masks of the 1 + steps steps bench_method ran, drawn here from their keys with
    # GKT's sampler (2 loops of 3 nested levels, bernoulli, drop_prob 0.2, after the full
    # network), priced with ResNet-14's hand-counted FLOPs.
    row = self.rows['gkt']
    fixed, per_block = _resnet14_flops(_TINY['side'])
    plain = fixed + per_block.sum()
    self.assertEqual(row['plain_flops_per_example'], plain)
    _, _, state, _ = bench_step.build_step('gkt', 'resnet14', _TINY['batch'], _TINY['side'])
    step_flops = []
    for step in range(1 + _TINY['steps']):
      key = jax.random.split(jax.random.fold_in(state.key, step))[0]
      chains = [np.asarray(masks.sample_nested_subnets(k, (2, 2, 2), 3, sampler='bernoulli',
                                                       drop_prob=0.2))
                for k in jax.random.split(key, 2)]
      kept = np.concatenate([np.ones((1, 6), bool)] + chains)
      step_flops.append(sum(fixed + per_block[m].sum() for m in kept))
    want = np.mean(step_flops) / plain
    self.assertLess(want, 7.0 - 0.05)  # these draws drop blocks: fewer FLOPs than 7 passes
    self.assertAlmostEqual(row['flops_per_example'] / plain, want, places=9,
                           msg='GKT\'s FLOPs are not those of the blocks its steps kept')

  def test_bfloat16_convolutions(self):
    step_impl, _, state, args = bench_step.build_step('gkt', 'resnet8', 4, 8, dtype='bfloat16')
    step = jax.jit(step_impl)
    self.assertRegex(step.lower(state, *args).as_text(), r'stablehlo.convolution.*bf16')
    state, measurements = step(state, *args)
    self.assertTrue(np.isfinite(float(measurements['loss'])))
    self.assertEqual(jax.tree.leaves(state.params)[0].dtype, np.float32)  # f32 weights

  def test_markdown_table(self):
    rows = [dict(r, ratio_to_plain=1.0, flop_ratio_to_plain=1.0, time_over_flop_ratio=1.0,
                 compile_ratio_to_plain=1.0) for r in self.rows.values()]
    text = bench_step.markdown(rows)
    self.assertIn('Machine: ', text)
    self.assertLen([l for l in text.splitlines() if l.startswith('| resnet14 |')], 3)

  def test_other_codebases_shapes_and_method_overrides(self):
    with flagsaver.flagsaver(methods=['gkt', 'stimulative_stpp']):
      overrides = bench_step.method_overrides(['gkt.loops=1', 'gkt.drop_prob=0.5',
                                               'stimulative_stpp.n_sub=2'],
                                              ['baseline', 'gkt', 'stimulative_stpp'])
    self.assertEqual(overrides, {'gkt': {'loops': 1, 'drop_prob': 0.5},
                                 'stimulative_stpp': {'n_sub': 2}})
    _, method, state, args = bench_step.build_step(
        'gkt', 'resnet8', 4, 8, shortcut='projection', num_classes=100,
        overrides=overrides['gkt'])
    self.assertEqual((method.model.shortcut, method.model.num_classes), ('projection', 100))
    self.assertEqual((method.loops, method.levels, method.forwards_per_step()), (1, 3, 4))
    self.assertIn('proj_conv', state.params['stage2_block1'])
    self.assertLess(int(np.max(args[1])), 100)
    _, stpp, _, _ = bench_step.build_step('stimulative_stpp', 'resnet8', 4, 8,
                                          overrides=overrides['stimulative_stpp'])
    self.assertEqual((stpp.n_sub, stpp.settings.normalize_logits), (2, True))
    for bad, message in ((['gkt.loops'], 'is not LABEL.FIELD=VALUE'),
                         (['gtk.loops=1'], 'is not LABEL.FIELD=VALUE'),
                         (['gkt.lops=1'], "unknown key 'lops'"),
                         (['gkt.loops=x'], "'loops=x': loops must be of type int")):
      with self.assertRaisesRegex(app.UsageError, message):
        bench_step.method_overrides(bad, ['baseline', 'gkt'])
    with self.assertRaisesRegex(ValueError, r'config\.method\.loops=0: must be an integer'):
      bench_step.build_step('gkt', 'resnet8', 4, 8, overrides={'loops': 0})

  def test_bad_method_and_arch_are_usage_errors(self):
    with flagsaver.flagsaver(methods=['reskd']):
      with self.assertRaisesRegex(app.UsageError, "'reskd' is not one of"):
        bench_step.main([])
    with flagsaver.flagsaver(arch=['resnet9']):
      with self.assertRaisesRegex(app.UsageError, "'resnet9' is not one of"):
        bench_step.main([])


class EvalAndDataBenchTest(absltest.TestCase):

  def test_bench_eval_reproduces_the_runs_final_evaluation(self):
    config = common.get_config('gkt', 'digits', 'smoke')
    config.verbose, config.plots = False, False
    workdir = self.create_tempdir().full_path
    summary = train_and_evaluate(config, workdir)
    row = bench_eval.bench(workdir, repeats=2)
    # Every evaluator's result equal to the run's (same checkpoint, same test set).
    self.assertTrue(row['same_results_as_summary'])
    self.assertEqual(row['full_accuracy'], summary['full_accuracy'])
    # smoke evals: the deployed network, 2 chains x 3 levels, the depth curves' distinct
    # subnets (their full-network points included).
    curves = sum(n for key in ('depth_curve', 'nested_depth_curve') for _, _, n in summary[key])
    self.assertEqual(row['networks'], 1 + 6 + curves)
    self.assertGreater(row['eval_images_per_second'], 0)
    spent = summary['eval_seconds'] + summary['intermediate_eval_seconds']
    self.assertGreater(summary['intermediate_eval_seconds'], 0)  # smoke evaluates at step 2
    self.assertAlmostEqual(row['eval_fraction_of_run'], spent / (
        spent + summary['train_seconds'] + summary['compile_seconds']))

  def test_bench_data_times_every_pipeline(self):
    rows = bench_data.bench_dataset('digits', None, steps=3, warmup=1, train_steps=1)
    self.assertEqual([r['pipeline'] for r in rows], ['host', 'device_host_part', 'device'])
    for row in rows:
      self.assertEqual(row['augment'], {'pad': 1, 'flip': False})
      self.assertGreater(row['images_per_second'], 0)
      self.assertAlmostEqual(row['ratio'],
                             row['images_per_second'] / row['train_images_per_second'])


class ProfileStepTest(absltest.TestCase):

  def test_hlo_instructions(self):
    text = '\n'.join([
        '  %conv.1 = f32[4,8]{1,0} convolution(%a, %b), metadata={op_name="jit(s)/full_network/'
        'transpose(jvp(ResNet))/conv_general_dilated" stack_frame_id=3}',
        '  ROOT %tuple.2 = (f32[4]{0}, /*index=1*/s32[]) tuple(%x, %y)',
        '  %cond.7 = (f32[2]{0}, f32[3]{0}) conditional(%p, %q), branch_computations={%r}',
    ])
    got = profile_step.hlo_instructions(text)
    self.assertEqual(got['conv.1'][0], 'convolution')
    self.assertIn('transpose(jvp(ResNet))', got['conv.1'][1])
    self.assertEqual(got['tuple.2'], ('tuple', ''))
    self.assertEqual(got['cond.7'][0], 'conditional')

  def test_parts_and_kinds(self):
    part, kind = profile_step.part_of, profile_step.kind_of
    self.assertEqual(part('jit(s)/full_network/jvp(ResNet)/x'), 'full network forward')
    self.assertEqual(part('jit(s)/full_network/transpose(jvp(ResNet))/x'),
                     'full network backward')
    self.assertEqual(part('jit(s)/subnets/while/body/transpose(jvp(ResNet))/x'),
                     'subnets backward')
    self.assertEqual(part('jit(s)/subnets/while/body/jvp(ResNet)/x'), 'subnets forward')
    self.assertEqual(part('jit(s)/optimizer/mul'), 'optimizer')
    self.assertEqual(part('jit(s)/jvp(ResNet)/x'), 'full network forward')  # e.g. baseline
    self.assertEqual(part('jit(s)/argmax'), 'other')
    self.assertEqual(kind('ynn_fusion.3', 'fusion', 'a/conv_general_dilated'), 'convolutions')
    self.assertEqual(kind('cond.3', 'conditional', 'a/cond'), 'control flow')
    self.assertEqual(kind('transpose_copy_fusion.2', 'fusion', 'a/b'), 'transposes and copies')
    self.assertEqual(kind('add_fusion.2', 'fusion', 'a/add'), 'other fused work')

  def test_self_times_subtract_nested_events(self):
    events = [  # thread 1: a [0, 10) holds b [1, 4) and c [5, 9), c holds d [6, 7)
        dict(ph='X', tid=1, pid=0, ts=0, dur=10, name='a'),
        dict(ph='X', tid=1, pid=0, ts=1, dur=3, name='b'),
        dict(ph='X', tid=1, pid=0, ts=5, dur=4, name='c'),
        dict(ph='X', tid=1, pid=0, ts=6, dur=1, name='d'),
        dict(ph='X', tid=2, pid=0, ts=2, dur=5, name='e'),  # another thread: not nested
        dict(ph='M', tid=2, pid=0, name='thread_name'),
    ]
    got = {e['name']: t for e, t in profile_step.self_times(events)}
    self.assertEqual(got, {'a': 3, 'b': 3, 'c': 3, 'd': 1, 'e': 5})

  def test_profile_of_a_gkt_step(self):
    trace_dir = self.create_tempdir().full_path
    result = profile_step.profile('gkt', 'resnet8', 4, 1, 8, 'auto', 1.0, 3, 'float32',
                                  trace_dir)
    shares = result['part']
    self.assertAlmostEqual(sum(shares.values()), result['total'])
    for part in ('subnets forward', 'subnets backward', 'optimizer'):
      self.assertGreater(shares[part], 0, part)  # the named scopes reach the HLO metadata
    # GKT's full-network pass is the first of its scan's passes: counted under 'subnets'.
    self.assertEqual(shares['full network forward'] + shares['full network backward'], 0)
    self.assertGreater(result['kind']['convolutions'], 0)
    text = profile_step.format_report(result, 'title')
    self.assertIn('| subnets backward |', text)
    self.assertTrue(np.isfinite(result['wall_seconds_per_step']))

  def test_one_arch_at_a_time(self):
    with flagsaver.flagsaver(arch=['resnet8', 'resnet20']):
      with self.assertRaisesRegex(app.UsageError, r"one architecture at a time.*'resnet20'"):
        profile_step.main([])


if __name__ == '__main__':
  absltest.main()
