r"""stochastic_depth on digits (ResNet-20).

Launch:
  python -m experiments.main --config experiments/configs/stochastic_depth/digits.py \
      --workdir /tmp/stochastic_depth_digits
Add ':smoke' to the config path for a 4-step check. Runtime: about 1-3 minutes on 2 CPU cores.
Expected result: see the README's results table (the command that produced it is there).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.get_config('stochastic_depth', 'digits', arg)
