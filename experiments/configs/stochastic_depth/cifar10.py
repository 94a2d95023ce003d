r"""Stochastic depth (linear decay to p_L = 0.5) on CIFAR-10.

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build cifar10 --file_format=array_record \
      --data_dir=DIR

Launch:
  python -m experiments.main --config experiments/configs/stochastic_depth/cifar10.py \
      --workdir /tmp/stochastic_depth_cifar10 --config.data.dir=DIR

Config arguments (`...cifar10.py:arg,arg`): smoke (4 steps of ResNet-20 on 200 test images),
arch=resnet56|resnet110|wrn28_10|vit_s (a WRN or ViT runs its family's recipe: SGD + dropout
0.3, or AdamW + warm-up), recipe=stimulative|stochastic_depth; see experiments/configs/common.py.

Expected result: 5.25% test error (94.75% accuracy) for ResNet-110 with stochastic depth,
against 6.41% for the constant-depth network (Huang et al., ECCV 2016, as quoted in
shared/methods/stochastic_depth.md). Recipe (default, the paper's): ResNet-110, batch 128, SGD
Nesterov 0.9, lr 0.1 x0.1 at 50% and 75% of training, weight decay 1e-4, 500 epochs, pad-4 crop
+ flip.

Runtime (an estimate, not a measurement): 195,000 steps (500 epochs of 390 batches of 128) at
~0.75 of a full pass per step (the mean keep rate; dropped blocks are skipped): ~1 h, assuming
one H100-class GPU trains a full ResNet-56 at ~10,000 img/s and a ResNet-110 at ~5,000 img/s
(assumed throughputs, not measurements: no GPU run of this config exists yet). Scale by the
img_per_sec the run logs to metrics.jsonl.
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.cifar_options(arg, arch='resnet110', recipe='stochastic_depth')
  recipe = common.cifar_recipe(options['recipe'], 'cifar10', options['arch'])
  config = common.base('stochastic_depth', recipe, options['arch'])
  config.data = common.cifar_data('cifar10', recipe)
  config.model = common.cifar_model(options['arch'], recipe)
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.cifar_smoke(config)
  return config
