r"""ResKD (our reading) on digits: teacher, KD student and res-students, one chain.

Launch:
  python -m experiments.reskd_pipeline --config experiments/configs/reskd/digits.py \
      --workdir /tmp/reskd_digits
Arguments as reskd/fashion_mnist.py (smoke: 4 steps per stage). Runtime: a few minutes on 2
CPU cores (30 epochs per stage).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.reskd_chain_config('digits', arg)
