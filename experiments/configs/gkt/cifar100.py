r"""GKT (our reading): group knowledge training on CIFAR-100.

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build cifar100 --file_format=array_record \
      --data_dir=DIR

Launch:
  python -m experiments.main --config experiments/configs/gkt/cifar100.py \
      --workdir /tmp/gkt_cifar100 --config.data.dir=DIR

Config arguments (`...cifar100.py:arg,arg`): smoke (4 steps of ResNet-20 on 200 test images),
arch=resnet56|resnet110|wrn28_10|vit_s (a WRN or ViT runs its family's recipe: SGD + dropout
0.3, or AdamW + warm-up), recipe=stimulative|stochastic_depth; see experiments/configs/common.py.

Expected result: none: only the GKT paper's abstract and Figure 3 caption are available
(shared/methods/gkt.md), so there is no number to compare with; report it as "GKT (our
reading)". Defaults: levels 3, loops 2, bernoulli child sampler (q = 0.2), EMA momentum 0.5, T =
1. Recipe (default): the stimulative-training authors' CIFAR config
(shared/methods/stimulative_training.md): ResNet-56, batch 128, SGD Nesterov 0.9, lr 0.1 cosine,
weight decay 1e-4, 200 epochs, pad-4 crop + flip. (GKT builds on the stimulative-training code.)

Runtime (an estimate, not a measurement): 78,000 steps; each runs the full network and 2 loops
of 3 nested subnets (expected kept blocks 82%, 68%, 57% of ResNet-56's 27), ~5.1 full passes:
~1.5 h for ResNet-56 (~2.8 h for ResNet-110), assuming one H100-class GPU trains a full
ResNet-56 at ~10,000 img/s and a ResNet-110 at ~5,000 img/s (assumed throughputs, not
measurements: no GPU run of this config exists yet). Scale by the img_per_sec the run logs to
metrics.jsonl.
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.cifar_options(arg)
  recipe = common.cifar_recipe(options['recipe'], 'cifar100', options['arch'])
  config = common.base('gkt', recipe, options['arch'])
  config.data = common.cifar_data('cifar100', recipe)
  config.model = common.cifar_model(options['arch'], recipe)
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.cifar_smoke(config)
  return config
