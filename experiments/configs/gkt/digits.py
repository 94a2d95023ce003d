r"""gkt on digits (ResNet-20).

Launch:
  python -m experiments.main --config experiments/configs/gkt/digits.py \
      --workdir /tmp/gkt_digits
Add ':smoke' to the config path for a 4-step check. Runtime: about 1-3 minutes on 2 CPU cores.
Expected result: see the README's results table (the command that produced it is there).
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.small_options(arg)
  # The base optimiser: SGD Nesterov 0.9, lr 0.1 cosine, weight decay 5e-4.
  config = common.base('gkt', arch=options['arch'])
  config.data = common.digits_data()
  config.model = common.digits_model(options['arch'])
  config.total_epochs = 30
  config.log_every_epochs = 3
  config.eval_every_epochs = 10
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.small_smoke(config)
  return config
