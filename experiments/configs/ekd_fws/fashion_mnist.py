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
  options = common.small_options(arg)
  # The base optimiser: SGD Nesterov 0.9, lr 0.1 cosine, weight decay 5e-4.
  config = common.base('ekd_fws', arch=options['arch'])
  config.data = common.fashion_mnist_data()
  config.model = common.model(options['arch'])
  # A short schedule that fits 2 CPU cores (see README); longer: --config.total_epochs=N.
  config.total_epochs = 3
  config.log_every_steps = 100
  config.eval_every_epochs = 1
  # 10,000 test images per subnet pass: fewer subnets.
  config.evals = common.evals(levels=common.levels(config), num_chains=4, depth_subnets=8)
  if options['smoke']:
    common.small_smoke(config)
  config.evals.paths = dict(type='classmate_paths')  # main, classmates, ensemble
  return config
