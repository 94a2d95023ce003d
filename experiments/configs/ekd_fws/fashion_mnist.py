r"""EKD-FWSNet (ekd_fws) on fashion_mnist (ResNet-20 with its classmate branch).

Launch:
  python -m experiments.main --config experiments/configs/ekd_fws/fashion_mnist.py \
      --workdir /tmp/ekd_fws_fmnist
Add ':smoke' to the config path for a 4-step check.
Method: T = 3, batch-mean KD weight 1.5 and attention weight 1 (the spec's CIFAR-10
ResNet-20 values), dropout 0.2 at the branch points; optimiser, schedule (3 epochs) and data
order as every method's fashion_mnist config, so runs compare. Runtime and result: see the
README's results table (the command that produced it is there).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.get_config('ekd_fws', 'fashion_mnist', arg)
