r"""Baseline (plain training of the full network) on CIFAR-100.

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build cifar100 --file_format=array_record \
      --data_dir=DIR

Launch:
  python -m experiments.main --config experiments/configs/baseline/cifar100.py \
      --workdir /tmp/baseline_cifar100 --config.data.dir=DIR

Config arguments (`...cifar100.py:arg,arg`): smoke (4 steps of ResNet-20 on 200 test images),
arch=resnet56|resnet110|wrn28_10|vit_s (a WRN or ViT runs its family's recipe: SGD + dropout
0.3, or AdamW + warm-up), recipe=stimulative|stochastic_depth; see experiments/configs/common.py.

Expected result: none in the specs for the default recipe. With
:arch=resnet110,recipe=stochastic_depth this is the stochastic-depth paper's constant-depth
baseline: 27.22% test error (72.78% accuracy), Huang et al., ECCV 2016, as quoted in
shared/methods/stochastic_depth.md. Recipe (default): the stimulative-training authors' CIFAR
config (shared/methods/stimulative_training.md): ResNet-56, batch 128, SGD Nesterov 0.9, lr 0.1
cosine, weight decay 1e-4, 200 epochs, pad-4 crop + flip.

Runtime (an estimate, not a measurement): 78,000 steps (200 epochs of 390 batches of 128): ~17
min for ResNet-56 (~35 min for ResNet-110), assuming one H100-class GPU trains a full ResNet-56
at ~10,000 img/s and a ResNet-110 at ~5,000 img/s (assumed throughputs, not measurements: no GPU
run of this config exists yet). Scale by the img_per_sec the run logs to metrics.jsonl.
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.cifar_options(arg)
  recipe = common.cifar_recipe(options['recipe'], 'cifar100', options['arch'])
  config = common.base('baseline', recipe, options['arch'])
  config.data = common.cifar_data('cifar100', recipe)
  config.model = common.cifar_model(options['arch'], recipe)
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.cifar_smoke(config)
  return config
