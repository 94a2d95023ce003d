r"""EKD-FWSNet (ekd_fws) on digits (ResNet-20 with its classmate branch).

Launch:
  python -m experiments.main --config experiments/configs/ekd_fws/digits.py \
      --workdir /tmp/ekd_fws_digits
Add ':smoke' to the config path for a 4-step check. Runtime: about 2-4 minutes on 2 CPU cores
(the step runs 6 stage passes, the baseline's 3).
Method: T = 3, batch-mean KD weight 1.5 and attention weight 1 (the spec's CIFAR-10
ResNet-20 values), dropout 0.2 at the branch points; optimiser and schedule as every method's
digits config, so runs compare. Expected result: see the README (the command that produced
it is there).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.get_config('ekd_fws', 'digits', arg)
