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
  options = common.small_options(arg)
  # The base optimiser: SGD Nesterov 0.9, lr 0.1 cosine, weight decay 5e-4.
  config = common.base('ekd_fws', arch=options['arch'])
  config.data = common.digits_data()
  config.model = common.digits_model(options['arch'])
  config.total_epochs = 30
  config.log_every_epochs = 3
  config.eval_every_epochs = 10
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.small_smoke(config)
  config.evals.paths = dict(type='classmate_paths')  # main, classmates, ensemble
  return config
