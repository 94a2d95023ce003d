r"""gkt on fashion_mnist (ResNet-20), 300 steps: the preemption-and-resume demonstration.

Launch (and, to see exact resume, stop it with SIGTERM and run the same command again):
  python -m experiments.main --config experiments/configs/gkt/fashion_mnist_short.py \
      --workdir workdirs/fmnist_gkt_short
Checkpoints every 50 steps (and on SIGTERM); the final accuracy of an interrupted and resumed
run equals that of an uninterrupted one (README, "Preemption and resume"). Runtime: about
5 minutes on 2 CPU cores (an estimate from the 3-epoch run's step time).
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  config = common.get_config('gkt', 'fashion_mnist', arg)
  if not common.small_options(arg)['smoke']:
    config.total_epochs = None
    config.eval_every_epochs = None
    config.total_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.ckpt_every_steps = 50
    config.evals = common.evals(levels=common.levels(config), num_chains=2, depth_subnets=4,
                                deletion=False)
  return config
