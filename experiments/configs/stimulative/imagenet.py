r"""Stimulative training (ST; ST++ with :stpp) on ImageNet-1k (imagenet2012).

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build imagenet2012 --file_format=array_record \
      --data_dir=DIR
after putting ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from https://image-net.org)
in DIR/downloads/manual/.

Launch:
  python -m experiments.main --config experiments/configs/stimulative/imagenet.py \
      --workdir /tmp/stimulative_imagenet --config.data.dir=DIR

Config arguments (`...imagenet.py:arg,arg`): smoke (4 steps of batch 8 on 64x64 crops, 64
validation images), stpp (ST++: normalised logits, 6 subnets per step, resized subnet inputs,
BatchNorm recalibration on 2,000 images, inter-stage rule M = (1, 2, 4, 1)); see
experiments/configs/common.py.

Recipe: the stimulative-training authors' ImageNet code
(shared/methods/stimulative_training.md): ResNet-50, batch 512, SGD Nesterov 0.9, lr 0.2 cosine
per step to 0, no warm-up, weight decay 1e-4, 200 epochs; random-resized-crop 224 + flip,
evaluation resize 256 + center crop 224.

Expected result: with :stpp, best top-1 80.50% after 200 epochs, as logged in the authors' ST++
ResNet-50 code (shared/methods/stimulative_training.md, "Recipe in the authors' code"; 80.97%
with 400 epochs and UniformAugment, which this config does not do). Plain ST (the default): no
ImageNet number in the specs.

Runtime (an estimate, not a measurement): 500,400 steps (200 epochs of 2,502 batches of 512); ST
runs the full network and one prefix subnet (10 of 16 blocks on average), ~1.6 full passes: ~46
h; with :stpp (6 subnets, M = (1, 2, 4, 1), resized inputs) ~3.8 passes: ~4.5 days; assuming one
H100-class GPU trains a full ResNet-50 at ~2,500 img/s (an assumed throughput, not a
measurement: no GPU run of this config exists yet), and that the host keeps up: tfds's PIL
decoding plus augment.random_resized_crop of a synthetic 500x375 JPEG took ~3 ms on one core of
the busy 2-core dev machine, so ~8 cores. Scale by the img_per_sec the run logs to
metrics.jsonl.
BatchNorm running statistics: method.bn_stats='full_network' (default: only the full
network's pass updates them, so the deployed network keeps its own); 'every_pass'
reproduces the authors' PyTorch loops (every pass updates them, in order).
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.parse_arg(arg, smoke=False, stpp=False)
  recipe = common.RECIPES['imagenet']
  config = common.base('stimulative', recipe)
  config.data = common.imagenet_data(recipe)
  config.model = common.resnet('resnet50', shortcut='projection')
  if options['stpp']:  # the ST++ switches and ResNet-50's inter-stage rule
    config.method.update(common.STPP,
                         max_shortening=common.STPP_RESNET50_MAX_SHORTENING)
  config.log_every_steps = 200
  config.eval_every_epochs = 10.0
  # 50,000 validation images per subnet pass: fewer subnets than on CIFAR.
  config.evals = common.evals(levels=common.levels(config), num_chains=4, depth_subnets=8)
  if options['smoke']:
    common.imagenet_smoke(config)
  return config
