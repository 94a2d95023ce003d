r"""Any method on Fashion-MNIST (60,000 train / 10,000 test 28x28 images) on 2 CPU cores: the
results suites' dataset (experiments/reproduce.py, docs/results.md).

Launch:
  python -m experiments.main --config experiments/configs/fashion_mnist.py:method=gkt \
      --workdir /tmp/gkt_fmnist
Arguments (`fashion_mnist.py:arg,arg`): method=baseline|stochastic_depth|layerdrop|
stimulative|gkt|sandwich|ekd_fws (default gkt); arch=NAME (any registered network, default
resnet20); stpp (stimulative training's ST++ switches); drop_path (stochastic depth per
example, a ViT's default); pruned_depth (also the accuracy with every other droppable block
pruned); short (300 steps, checkpoints every 50: the preemption-and-resume demonstration of
the README, about 5 minutes); smoke (4 steps on 500 test images). A ViT trains on 4x4
patches: `:method=gkt,arch=vit_ti,smoke` takes about 3 min on 2 CPU cores (compile ~30 s,
~13 s per step of 7 passes, final evaluation ~2 min).

Runtime and expected result: the README's results table and docs/results.md;
longer runs: --config.total_epochs=N.
"""

from ml_collections.config_dict import placeholder

from experiments.configs import common


def get_config(arg=None):
  options = common.options(arg, short=False)
  config = common.base(options, optim=common.small_optim(options['arch']))
  config.data = dict(name='fashion_mnist', dir=placeholder(str), batch_size=128,
                     eval_batch_size=500, augment=dict(pad=2, flip=True),
                     options=common.data_options())
  # A ViT on 4x4 patches: 49 tokens of a 28x28 image (2x2 patches: 196 tokens, ~6x the step).
  config.model = common.model(options['arch'], vit_patch_size=4)
  config.total_epochs = 3
  config.log_every_steps = 100
  config.eval_every_epochs = 1
  # 10,000 test images per subnet pass: fewer subnets than on digits.
  config.evals = common.config_evals(config, num_chains=4, depth_subnets=8)
  if options['smoke']:
    common.smoke(config)
    config.data.options.test_examples = 500  # the whole test set took 258 s of a smoke run
  elif options['short']:
    config.total_epochs = config.eval_every_epochs = None
    config.total_steps = config.eval_every_steps = 300
    config.log_every_steps = 25
    config.ckpt_every_steps = 50
    config.evals = common.config_evals(config, num_chains=2, depth_subnets=4, deletion=False)
  return common.finish(config, options)
