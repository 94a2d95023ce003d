r"""Any method on scikit-learn's 8x8 digits (1,438 train / 359 test images), in minutes on a
laptop: the demo (`make demo` trains GKT).

Launch:
  python -m experiments.main --config experiments/configs/digits.py:method=gkt \
      --workdir /tmp/gkt_digits
Arguments (`digits.py:arg,arg`): method=baseline|stochastic_depth|layerdrop|stimulative|gkt|
sandwich|ekd_fws (default gkt); arch=NAME (any registered network, default resnet20, e.g. vit_ti or
wrn16_4); stpp (stimulative training's ST++ switches); drop_path (stochastic depth per
example, a ViT's default); pruned_depth (also the accuracy with every other droppable block
pruned); smoke (4 steps). A ViT takes 2x2 patches (16 tokens): `:method=gkt,arch=vit_ti,smoke`
takes under a minute on 2 CPU cores (compile ~15 s, ~2.5 s per step of 7 passes).

Runtime: about 1-3 minutes on 2 CPU cores (EKD-FWSNet 2-4: its step runs 6 stage passes, the
baseline's 3). Expected result (GKT): the table `make demo` ends with, in the README.
"""

from ml_collections.config_dict import placeholder

from experiments.configs import common
from gkt_jax.config import model as model_config


def get_config(arg=None):
  options = common.options(arg)
  config = common.base(options, optim=common.small_optim(options['arch']))
  config.data = dict(name='digits', dir=placeholder(str), batch_size=64, eval_batch_size=400,
                     augment=dict(pad=1, flip=False), options=common.data_options())
  # At 8x8 a ResNet runs each block in no cond: the CPU default (cond) runs no faster, and
  # its gradient's first call takes ~50% longer (experiments/probes/block_boundaries.py).
  config.model = common.model(options['arch'])
  if model_config.family(options['arch']) == 'resnet':
    config.model.block_barriers = 'none'
  config.total_epochs = 30
  config.log_every_epochs = 3
  config.eval_every_epochs = 10
  config.evals = common.config_evals(config)
  if options['smoke']:
    common.smoke(config)
  return common.finish(config, options)
