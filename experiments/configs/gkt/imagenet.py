r"""GKT (our reading): group knowledge training on ImageNet-1k (imagenet2012).

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build imagenet2012 --file_format=array_record \
      --data_dir=DIR
after putting ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from https://image-net.org)
in DIR/downloads/manual/.

Launch:
  python -m experiments.main --config experiments/configs/gkt/imagenet.py \
      --workdir /tmp/gkt_imagenet --config.data.dir=DIR

Config arguments (`...imagenet.py:arg`): smoke (4 steps of batch 8 on 64x64 crops, 64 validation
images); see experiments/configs/common.py.

Recipe: the stimulative-training authors' ImageNet code
(shared/methods/stimulative_training.md): ResNet-50, batch 512, SGD Nesterov 0.9, lr 0.2 cosine
per step to 0, no warm-up, weight decay 1e-4, 200 epochs; random-resized-crop 224 + flip,
evaluation resize 256 + center crop 224.

Expected result: none: only the GKT paper's abstract and Figure 3 caption are available
(shared/methods/gkt.md); report it as "GKT (our reading)". The stimulative-training recipe is
used because GKT builds on that code.

Runtime (an estimate, not a measurement): 500,400 steps (200 epochs of 2,502 batches of 512);
each runs the full network and 2 loops of 3 nested subnets (expected kept blocks 85%, 73%, 63%
of 16), ~5.4 full passes: ~6.5 days; assuming one H100-class GPU trains a full ResNet-50 at
~2,500 img/s (an assumed throughput, not a measurement: no GPU run of this config exists yet),
and that the host keeps up: tfds's PIL decoding plus augment.random_resized_crop of a synthetic
500x375 JPEG took ~3 ms on one core of the busy 2-core dev machine, so ~8 cores. Scale by the
img_per_sec the run logs to metrics.jsonl.
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.parse_arg(arg, smoke=False)
  recipe = common.RECIPES['imagenet']
  config = common.base('gkt', recipe)
  config.data = common.imagenet_data(recipe)
  config.model = common.resnet('resnet50', shortcut='projection')
  config.log_every_steps = 200
  config.eval_every_epochs = 10.0
  # 50,000 validation images per subnet pass: fewer subnets than on CIFAR.
  config.evals = common.evals(levels=common.levels(config), num_chains=4, depth_subnets=8)
  if options['smoke']:
    common.imagenet_smoke(config)
  return config
