r"""Any method on ImageNet-1k (imagenet2012), with the stimulative-training authors' recipe
(docs/methods/stimulative_training.md): ResNet-50, random-resized-crop 224 + flip,
evaluation at resize 256 + center crop 224. GKT builds on that code, so it trains with it too.

Prepare the data once (TensorFlow is needed for this step only): put ILSVRC2012_img_train.tar
and ILSVRC2012_img_val.tar (from https://image-net.org) in DIR/downloads/manual/, then
  pip install tensorflow-cpu && tfds build imagenet2012 --file_format=array_record \
      --data_dir=DIR
Launch:
  python -m experiments.main --config experiments/configs/imagenet.py:method=gkt \
      --workdir /tmp/gkt_imagenet --config.data.dir=DIR

Arguments (`imagenet.py:arg,arg`): method=NAME (default gkt); stpp (stimulative training's
ST++ switches, with ResNet-50's inter-stage rule M = (1, 2, 4, 1)); drop_path and
pruned_depth (as in digits.py); smoke (4 steps of batch 8 on 64x64 crops, 64 validation
images).

Expected result: stimulative with stpp, best top-1 80.50% after 200 epochs, as logged in the
authors' ST++ ResNet-50 code (80.97% with 400 epochs and UniformAugment, which this config does
not do). Plain ST and GKT: no ImageNet number in the specs (report GKT as "GKT (our
reading)").

Runtime (an estimate, not a measurement): 500,400 steps (200 epochs of 2,502 batches of 512);
ST runs ~1.6 full passes a step: ~46 h; with stpp ~3.8 passes: ~4.5 days; GKT (the full network
and 2 loops of 3 nested subnets, ~5.4 passes): ~6.5 days; assuming one H100-class GPU trains a
full ResNet-50 at ~2,500 img/s (an assumed throughput: this config has no GPU measurement),
and that the host keeps up: tfds's PIL decoding plus augment.random_resized_crop of a
500x375 JPEG takes about 3 ms of one CPU core, so ~8 host cores feed that rate.
Scale by the img_per_sec the run logs to metrics.jsonl.
"""

from ml_collections.config_dict import placeholder

from experiments.configs import common


def get_config(arg=None):
  options = common.options(arg, arch='resnet50')
  config = common.base(options, optim=common.sgd(lr=0.2, weight_decay=1e-4, schedule='cosine'))
  if options['stpp']:
    config.method.max_shortening = common.STPP_RESNET50_MAX_SHORTENING
  config.data = dict(name='imagenet2012', dir=placeholder(str), batch_size=512,
                     eval_batch_size=500, augment=dict(random_resized_crop=True, flip=True),
                     options=common.data_options(image_size=224, resize_size=256))
  config.model = common.model(options['arch'], shortcut='projection')
  config.total_epochs = 200.0
  config.log_every_steps = 200
  config.eval_every_epochs = 10.0
  # 50,000 validation images per subnet pass: fewer subnets than on CIFAR.
  config.evals = common.config_evals(config, num_chains=4, depth_subnets=8)
  if options['smoke']:
    config.data.update(batch_size=8, eval_batch_size=32)
    config.data.options.update(image_size=64, resize_size=73, test_split='validation[:64]')
    common.smoke(config)
  return common.finish(config, options)
