r"""Stimulative training with the ST++ switches on fashion_mnist (ResNet-20).

Launch:
  python -m experiments.main --config experiments/configs/stimulative/fashion_mnist_stpp.py \
      --workdir /tmp/stpp_fmnist
ST++: normalised logits, 6 subnets per step, subnet inputs resized (4 size buckets in
[0.43, 1] x side), BatchNorm recalibrated on 2,000 training images before evaluation.
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  config = common.get_config('stimulative', 'fashion_mnist', arg)
  config.method.update(normalize_logits=True, n_sub=6, subnet_resize=True,
                       bn_recalibration_images=2000)
  return config
