r"""The ResKD chain (our reading) on digits or Fashion-MNIST: teacher, KD student and
res-students, each a run of the dataset's config (see gkt_jax.pipelines.reskd_chain).

Launch (trains every stage not yet finished, then measures accuracy against cost):
  python -m experiments.reskd_pipeline \
      --config experiments/configs/reskd_chain.py:dataset=fashion_mnist \
      --workdir workdirs/fmnist_reskd
Arguments (`reskd_chain.py:arg,arg`): dataset=digits|fashion_mnist (default fashion_mnist);
smoke (4 steps per stage); res=K (res-students, default 2); target=logits|kd
(residual_target); student_features (res-students also read the student's pre-logits); any
field with --config.<stage>.<field>=..., e.g. --config.res_student.model.width_multiplier=0.5.

Stages (the dataset's optimiser, length and data order): teacher ResNet-20 (CE), student
ResNet-8 x0.5 (CE + KD), res-students ResNet-8 x0.25 (mean squared error to the logit residual
z_T - z_C). Runtime and result: docs/results.md (ResKD: accuracy against inference cost).
"""

import ml_collections

from experiments.configs import common

THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999,
              1.01)


def get_config(arg=None):
  options = common.parse_arg(arg, dataset='fashion_mnist', smoke=False, res=2,
                             target='logits', student_features=False)
  if options['dataset'] not in ('digits', 'fashion_mnist'):
    raise ValueError(f"config argument dataset={options['dataset']!r}: digits or "
                     'fashion_mnist')
  smoke = 'smoke' if options['smoke'] else None
  config = ml_collections.ConfigDict()
  config.teacher = common.get_config('baseline', options['dataset'], smoke)
  config.student = common.get_config('kd', options['dataset'], smoke)
  config.student.model.update(arch='resnet8', width_multiplier=0.5)
  config.res_student = common.get_config('reskd', options['dataset'], smoke)
  config.res_student.model.update(arch='resnet8', width_multiplier=0.25)
  config.res_student.method.update(residual_target=options['target'],
                                    student_features=options['student_features'])
  for stage in (config.teacher, config.student, config.res_student):
    stage.evals = {'full': dict(type='full')}
  config.num_res_students = options['res']
  config.analysis = dict(rule='max_prob', thresholds=THRESHOLDS, predictor_threshold=0.9,
                         eval_batch_size=500)
  return config
