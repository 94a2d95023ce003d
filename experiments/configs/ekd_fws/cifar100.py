r"""EKD-FWSNet (ekd_fws) on CIFAR100: the main path (a plain ResNet) distilled from the
ensemble of its weight-sharing classmate paths.

Prepare the data once (TensorFlow is needed for this step only):
  pip install tensorflow-cpu && tfds build cifar100 --file_format=array_record \
      --data_dir=DIR

Launch:
  python -m experiments.main --config experiments/configs/ekd_fws/cifar100.py \
      --workdir /tmp/ekd_fws_cifar100 --config.data.dir=DIR
Deploy the main path alone (a plain ResNet checkpoint, evaluated):
  python -m experiments.export_main_path --workdir /tmp/ekd_fws_cifar100 --out /tmp/ekd_fws_cifar100_main

Config arguments (`...cifar100.py:arg,arg`): smoke (4 steps of ResNet-20 on 200 test images),
arch=resnet20..110|resnet18|resnet34|resnet50, recipe=ekd_fws|stimulative|stochastic_depth; see
experiments/configs/common.py (EKD_CIFAR).

Recipe (default, shared/methods/ekd_fwsnet.md): batch 128, SGD momentum 0.9, weight decay
1e-4, 300 epochs, lr x0.1 at epochs 150 and 250, pad-4 crop + flip, T = 3, batch-mean weights:
3-stage ResNets: KD weight 0.6, attention weight 1, no label
smoothing, dropout 0.2, lr 0.1 (0.01 for ResNet-56 (default) and ResNet-110); 4-stage
ResNet-18/34/50 (CIFAR stem, projection shortcuts): lr 0.01, KD weight 1.0, attention weight
0.5, label smoothing 0.2, dropout 0.1.
Expected result: none: the spec quotes no accuracy. Compare the main path (eval
'full_accuracy', the deployed network) with the baseline on the same recipe and schedule:
  python -m experiments.main --config experiments/configs/baseline/cifar100.py:recipe=ekd_fws \
      --workdir /tmp/baseline_cifar100_ekd_recipe --config.data.dir=DIR

Runtime (an estimate, not a measurement): 117,000 steps (300 epochs of 390 batches of 128);
each step runs 6 stage passes of a 3-stage net (the baseline's 3): ~2x the baseline's
forward FLOPs (see experiments/bench_step.py), so ~50 min for ResNet-56 assuming one
H100-class GPU trains a full ResNet-56 at ~10,000 img/s (an assumed throughput, not a
measurement: no GPU run of this config exists yet). Scale by the img_per_sec the run logs.
"""

from experiments.configs import common


def get_config(arg=None):
  options = common.cifar_options(arg, recipe='ekd_fws')
  recipe = common.cifar_recipe(options['recipe'], 'cifar100', options['arch'])
  config = common.base('ekd_fws', recipe, options['arch'])
  config.data = common.cifar_data('cifar100', recipe)
  config.model = common.cifar_model(options['arch'], recipe)
  _, kd_weight, att_weight, smoothing = common.ekd_cifar('cifar100', options['arch'])
  config.method.update(kd_weight=kd_weight, att_weight=att_weight,
                       label_smoothing=smoothing)
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.evals = common.evals(levels=common.levels(config))
  if options['smoke']:
    common.cifar_smoke(config)
  config.evals.paths = dict(type='classmate_paths')  # main, classmates, ensemble
  return config
