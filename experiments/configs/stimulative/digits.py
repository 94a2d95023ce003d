r"""stimulative on digits (ResNet-20).

Launch:
  python -m experiments.main --config experiments/configs/stimulative/digits.py \
      --workdir /tmp/stimulative_digits
Add ':smoke' to the config path for a 4-step check. Runtime: about 1-3 minutes on 2 CPU cores.
Expected result: see the README's results table (the command that produced it is there).
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.get_config('stimulative', 'digits', arg)
