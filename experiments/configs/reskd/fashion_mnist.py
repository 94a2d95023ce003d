r"""ResKD (our reading) on fashion_mnist: teacher, KD student and res-students, one chain.

Launch (trains every stage not yet finished, then measures accuracy vs cost):
  python -m experiments.reskd_pipeline --config experiments/configs/reskd/fashion_mnist.py \
      --workdir workdirs/fmnist_reskd
Arguments (`...fashion_mnist.py:arg,arg`): smoke (4 steps per stage), res=K (res-students,
default 2), target=logits|kd (residual_target), student_features; any field with
--config.<stage>.<field>=..., e.g. --config.res_student.model.width_multiplier=0.5.

Stages (3 epochs each, every method's Fashion-MNIST optimiser and data order): teacher
ResNet-20 (CE), student ResNet-8 x0.5 (CE + 1.0 T^2 KL, T = 4), res-students ResNet-8 x0.25
(mean squared error to the logit residual z_T - z_C). Runtime and result: see the README.
"""

from experiments.configs import common


def get_config(arg=None):
  return common.reskd_chain_config('fashion_mnist', arg)
