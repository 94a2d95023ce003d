"""Shared pieces of the experiment configs: datasets, optimiser recipes, method defaults."""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from gkt_jax import models

# Method defaults (the specs in shared/methods/); every guessed GKT choice is a field.
METHODS = {
    'baseline': dict(name='baseline'),
    'stochastic_depth': dict(name='stochastic_depth', final_survival=0.5, rule='linear',
                             test_scaling=True),
    'stimulative': dict(name='stimulative', n_sub=1, temperature=1.0, kl_weight=1.0,
                        max_shortening=None,  # a fresh placeholder per config: method_fields
                        normalize_logits=False, subnet_resize=False,
                        resize_min_scale=0.43, resize_buckets=4, subnet_label_weight=0.0,
                        bn_recalibration_images=0, bn_stats='full_network'),
    'gkt': dict(name='gkt', levels=3, loops=2, sampler='bernoulli', drop_prob=0.2, gamma=0.5,
                aggregate='ema', momentum=0.5, temperature=1.0, kl_weight=1.0,
                subnet_label_weight=0.0, normalize_logits=False, bn_stats='full_network'),
    # ekd_fwsnet.md: T = 3; kd_weight is the batch-mean weight (CIFAR-10 ResNet-20/32/44's
    # 1.5 here; the dataset configs set the spec's value); dropout_rate None: 0.2 for
    # 3-stage nets, 0.1 for 4-stage ones; the teacher is not detached, as in the authors' code.
    'ekd_fws': dict(name='ekd_fws', temperature=3.0, kd_weight=1.5, att_weight=1.0,
                    dropout_rate=None, detach_teacher=False),
    # reskd.md, our reading: the KD student (alpha, T our choices) and the res-students; the
    # workdirs of frozen stages are set by the chain (gkt_jax.pipelines.reskd_chain).
    'kd': dict(name='kd', teacher=None, alpha=1.0, temperature=4.0),
    'reskd': dict(name='reskd', teacher=None, student=None, res_students=(),
                  residual_target='logits', alpha=1.0, temperature=4.0,
                  student_features=False),
}



def method_fields(method: str) -> dict:
  """METHODS[method] plus label smoothing, with fresh placeholders for unset tuple fields.

  (A placeholder is a shared reference: one kept in METHODS itself would carry a value set
  on one config, e.g. ImageNet's max_shortening, into every config built after it.)
  """
  if method not in METHODS:
    raise ValueError(f'method={method!r} is not one of {tuple(METHODS)}')
  fields = dict(METHODS[method], label_smoothing=0.0)
  for name, kind in (('max_shortening', tuple), ('dropout_rate', float), ('teacher', str),
                     ('student', str)):
    if name in fields and fields[name] is None:
      fields[name] = placeholder(kind)
  return fields

def _levels(config: ml_collections.ConfigDict):
  """The subnet evaluators' levels: method.levels itself (a FieldReference, so that
  --config.method.levels=4 reaches the evaluators too), else 3."""
  return config.method.get_ref('levels') if 'levels' in config.method else 3


def evals(levels: int = 3, num_chains: int = 8, depth_subnets: int = 16,
          deletion: bool = True) -> dict:
  """The standard evaluators: full network every eval; subnets at the end only (nested
  chains of GKT's sampler, and accuracy by kept blocks over prefix and over nested subnets)."""
  out = {
      'full': dict(type='full'),
      'subnet_chains': dict(type='subnet_chains', final_only=True, num_chains=num_chains,
                            levels=levels, sampler='bernoulli', drop_prob=0.2, seed=0),
      'depth_curve': dict(type='depth_curve', final_only=True, num_subnets=depth_subnets,
                          sampler='prefix', seed=1),
      # The same depth curve over GKT's nested subnets: every method on both samplers.
      'nested_depth_curve': dict(type='nested_depth_curve', final_only=True,
                                 num_chains=num_chains, levels=levels, sampler='bernoulli',
                                 drop_prob=0.2, seed=2),
  }
  if deletion:
    out['block_deletion'] = dict(type='block_deletion', final_only=True)
  return out


FOUR_STAGE_ARCHS = ('resnet18', 'resnet34', 'resnet50')
SMALL_DATASETS = ('digits', 'fashion_mnist')
CIFAR_DATASETS = ('cifar10', 'cifar100')
DATASETS = SMALL_DATASETS + CIFAR_DATASETS + ('imagenet2012',)

_OPTIM_BASE = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule='cosine',
                   warmup_steps=0, step_boundaries=(0.5, 0.75), step_factor=0.1)
# Training recipes of the method specs (shared/methods/), by name.
RECIPES = {
    # stimulative_training.md, "Recipe in the authors' code": the CIFAR config left in the
    # authors' repository (likely the setting used). GKT builds on that code.
    'stimulative': dict(epochs=200, batch_size=128, augment=dict(pad=4, flip=True),
                        optim=dict(lr=0.1, weight_decay=1e-4, schedule='cosine')),
    # stochastic_depth.md: the paper's CIFAR recipe (ResNet-110; "translation" is the pad-4
    # random crop of the authors' Torch code).
    'stochastic_depth': dict(epochs=500, batch_size=128, augment=dict(pad=4, flip=True),
                             optim=dict(lr=0.1, weight_decay=1e-4, schedule='step',
                                        step_boundaries=(0.5, 0.75), step_factor=0.1)),
    # ekd_fwsnet.md, "Training recipe in the paper's configs" (CIFAR): batch 128, SGD
    # momentum 0.9 (PyTorch's default, not Nesterov), weight decay 1e-4, 300 epochs, lr x0.1
    # at epochs 150 and 250, flip + pad-4 crop; lr 0.1 (0.01 for ResNet-56 and 4-stage nets:
    # EKD_CIFAR below).
    'ekd_fws': dict(epochs=300, batch_size=128, augment=dict(pad=4, flip=True),
                    optim=dict(lr=0.1, weight_decay=1e-4, nesterov=False, schedule='step',
                               step_boundaries=(0.5, 250 / 300), step_factor=0.1)),
    # stimulative_training.md: the authors' ImageNet ResNet-50 code (cosine per iteration to
    # 0, no warm-up).
    'imagenet': dict(epochs=200, batch_size=512,
                     augment=dict(random_resized_crop=True, flip=True),
                     optim=dict(lr=0.2, weight_decay=1e-4, schedule='cosine')),
}
CIFAR_RECIPES = ('stimulative', 'stochastic_depth', 'ekd_fws')
# EKD-FWSNet on CIFAR (ekd_fwsnet.md), by (dataset, arch): lr, batch-mean KD weight,
# attention weight, label smoothing. ResNet-110 is not in the spec: it takes ResNet-56's
# values (our choice). 4-stage nets run with the CIFAR stem and projection shortcuts.
EKD_CIFAR = {
    ('cifar10', 'resnet20'): (0.1, 1.5, 1.0, 0.0), ('cifar10', 'resnet32'): (0.1, 1.5, 1.0, 0.0),
    ('cifar10', 'resnet44'): (0.1, 1.5, 1.0, 0.0), ('cifar10', 'resnet56'): (0.01, 6.0, 1.0, 0.0),
    ('cifar10', 'resnet110'): (0.01, 6.0, 1.0, 0.0),
    **{('cifar100', f'resnet{d}'): (0.1 if d < 56 else 0.01, 0.6, 1.0, 0.0)
       for d in (20, 32, 44, 56, 110)},
    **{('cifar100', f'resnet{d}'): (0.01, 1.0, 0.5, 0.2) for d in (18, 34, 50)},
}
# ST++ switches (stimulative_training.md); for ResNet-50 also the inter-stage rule.
STPP = dict(normalize_logits=True, n_sub=6, subnet_resize=True, bn_recalibration_images=2000)
STPP_RESNET50_MAX_SHORTENING = (1, 2, 4, 1)

# Named variants of the methods, label: (method, fields over its defaults): the rows of the
# results suites (experiments/reproduce.py) and of the step benchmark (bench_step).
VARIANTS = {
    'baseline': ('baseline', {}),
    'stochastic_depth': ('stochastic_depth', {}),
    'stimulative': ('stimulative', {}),
    'stimulative_stpp': ('stimulative', dict(STPP)),
    'gkt': ('gkt', {}),
    'gkt_geometric': ('gkt', {'sampler': 'geometric'}),
    'ekd_fws': ('ekd_fws', {}),
    # The BatchNorm ablation: running statistics updated by every pass (the authors' loops).
    'stimulative_every_pass': ('stimulative', {'bn_stats': 'every_pass'}),
    'gkt_every_pass': ('gkt', {'bn_stats': 'every_pass'}),
}


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses a config argument 'key=value,flag,...' (big_vision style) against `defaults`.

  A bare `flag` sets a boolean default to True; values take the type of their default
  (str when the default is None). Unknown keys raise a ValueError naming the allowed ones.
  """
  out = dict(defaults)
  for token in filter(None, (arg or '').split(',')):
    key, has_value, value = token.partition('=')
    if key not in defaults:
      raise ValueError(f'config argument {token!r} (in {arg!r}): unknown key {key!r}; '
                       f'allowed: {sorted(defaults)}')
    default = defaults[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {token!r}: {key} needs a value ({key}=...)')
      out[key] = True
    elif isinstance(default, bool):
      if value not in ('True', 'False', 'true', 'false', '1', '0'):
        raise ValueError(f'config argument {token!r}: {key} is a boolean')
      out[key] = value in ('True', 'true', '1')
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return out


def get_config(method: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """A full config for `method` on `dataset` (one of DATASETS).

  arg, a comma-separated list (`--config file.py:arg`):
    digits, fashion_mnist: None, or 'smoke' for a few steps (tests, quick checks).
    cifar10, cifar100: 'smoke' (4 steps of ResNet-20 at batch 32, evaluated on 200 test
      images), 'arch=resnet56|resnet110|...' (default resnet110 for stochastic_depth, as in
      its paper, else resnet56; resnet18/34/50 get the CIFAR stem),
      'recipe=stimulative|stochastic_depth|ekd_fws' (default: the method's own spec recipe,
      'stimulative' for baseline, stimulative and gkt; see RECIPES), and for stimulative
      'stpp' (the ST++ switches).
    imagenet2012: 'smoke' (4 steps at batch 8 on 64x64 crops, 64 validation images), and
      for stimulative 'stpp' (ST++ switches and the ResNet-50 inter-stage rule M=(1,2,4,1)).
  """
  config = _dataset_config(method, dataset, arg)
  if method == 'ekd_fws':  # main, classmate and ensemble accuracy at every evaluation
    config.evals.paths = dict(type='classmate_paths')
  return config


def _dataset_config(method: str, dataset: str, arg: str | None) -> ml_collections.ConfigDict:
  if method not in METHODS:
    raise ValueError(f'method={method!r} is not one of {tuple(METHODS)}')
  if dataset in SMALL_DATASETS:
    return _small_config(method, dataset, arg)
  if dataset in CIFAR_DATASETS:
    own_recipe = method if method in ('stochastic_depth', 'ekd_fws') else 'stimulative'
    defaults = dict(smoke=False, arch='resnet110' if method == 'stochastic_depth' else
                    'resnet56', recipe=own_recipe)
  elif dataset == 'imagenet2012':
    defaults = dict(smoke=False)
  else:
    raise ValueError(f'dataset={dataset!r} is not one of {DATASETS}')
  if method == 'stimulative':
    defaults['stpp'] = False
  options = parse_arg(arg, **defaults)
  if dataset == 'imagenet2012':
    return _imagenet_config(method, options)
  return _cifar_config(method, dataset, options)


def _run_fields(config: ml_collections.ConfigDict) -> None:
  """Durations, parallelism and checkpoint fields of every config (overridable)."""
  # Durations: set *_steps or *_epochs (one of each pair). Checkpoints default to every
  # evaluation, plus the end of training and SIGTERM.
  for prefix in ('total', 'log_every', 'eval_every', 'ckpt_every'):
    config[f'{prefix}_steps'] = placeholder(int)
    config[f'{prefix}_epochs'] = placeholder(float)
  config.parallel = 'jit'             # or 'pmap': per-device BatchNorm, pmean-ed gradients
  config.per_device_subnets = False   # 'pmap' only: each device draws its own subnets
  config.checkpoints = True
  config.max_checkpoints = 3
  config.resume = placeholder(str)    # another workdir to continue (full state)
  config.init = placeholder(str)      # a workdir/checkpoint to take weights from
  config.plots = True
  config.verbose = True


def _common(config: ml_collections.ConfigDict, method: str, recipe: dict) -> None:
  """Seed, method, optimiser, duration placeholders and flags shared by every config."""
  config.seed = 0
  config.method = method_fields(method)
  config.optim = dict(_OPTIM_BASE, **recipe['optim'])
  _run_fields(config)
  config.total_epochs = float(recipe['epochs'])


def _smoke_durations(config: ml_collections.ConfigDict, levels: int) -> None:
  config.total_epochs = None
  config.log_every_epochs = None
  config.eval_every_epochs = None
  config.total_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 2
  config.evals = evals(levels=levels, num_chains=2, depth_subnets=3, deletion=False)


def _cifar_config(method: str, dataset: str, options: dict) -> ml_collections.ConfigDict:
  """CIFAR-10/100 with a CIFAR ResNet and one of RECIPES (see get_config)."""
  if options['recipe'] not in CIFAR_RECIPES:
    raise ValueError(f"config argument recipe={options['recipe']!r} is not one of "
                     f"{CIFAR_RECIPES}")
  if options['arch'] not in models.ARCHS:
    raise ValueError(f"config argument arch={options['arch']!r} is not one of "
                     f"{models.ARCHS}")
  recipe = RECIPES[options['recipe']]
  config = ml_collections.ConfigDict()
  _common(config, method, recipe)
  levels = _levels(config)
  # cache: 60,000 32x32 images decoded into memory once (180 MB, a few seconds).
  config.data = dict(name=dataset, dir=placeholder(str), batch_size=recipe['batch_size'],
                     eval_batch_size=500, augment=dict(recipe['augment']),
                     options=dict(cache=True))
  config.model = dict(arch=options['arch'], width_multiplier=1.0, shortcut='pad',
                      conv_impl='auto')
  if options['arch'] in FOUR_STAGE_ARCHS:  # 32x32 inputs: the CIFAR stem
    config.model.update(stem='cifar', shortcut='projection')
  _ekd_cifar(config, method, dataset, options['arch'], options['recipe'])
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.evals = evals(levels=levels)
  if options.get('stpp'):
    config.method.update(STPP)
  if options['smoke']:
    config.model.arch = 'resnet20'
    config.data.batch_size = 32
    config.data.eval_batch_size = 100
    config.data.options = dict(cache=False, test_split='test[:200]')
    _smoke_durations(config, levels)
  return config


def _ekd_cifar(config, method: str, dataset: str, arch: str, recipe: str) -> None:
  """EKD_CIFAR's learning rate (recipe 'ekd_fws', any method: its baseline is comparable)
  and weights (method ekd_fws) for dataset and arch."""
  if method != 'ekd_fws' and recipe != 'ekd_fws':
    return
  if (dataset, arch) not in EKD_CIFAR:
    raise ValueError(f'recipe ekd_fws on {dataset}: arch={arch!r} has no values in the spec; '
                     f'allowed: {sorted(a for d, a in EKD_CIFAR if d == dataset)}')
  lr, kd_weight, att_weight, label_smoothing = EKD_CIFAR[dataset, arch]
  if method == 'ekd_fws':
    config.method.update(kd_weight=kd_weight, att_weight=att_weight,
                         label_smoothing=label_smoothing)
  if recipe == 'ekd_fws':
    config.optim.lr = lr


def _imagenet_config(method: str, options: dict) -> ml_collections.ConfigDict:
  """ImageNet-1k (imagenet2012) with ResNet-50 and the authors' ImageNet recipe."""
  recipe = RECIPES['imagenet']
  config = ml_collections.ConfigDict()
  _common(config, method, recipe)
  levels = _levels(config)
  config.data = dict(name='imagenet2012', dir=placeholder(str),
                     batch_size=recipe['batch_size'], eval_batch_size=500,
                     augment=dict(recipe['augment']),
                     options=dict(image_size=224, resize_size=256))
  config.model = dict(arch='resnet50', width_multiplier=1.0, shortcut='projection',
                      conv_impl='auto')
  config.log_every_steps = 200
  config.eval_every_epochs = 10.0
  # 50,000 validation images per subnet pass: fewer subnets than on CIFAR.
  config.evals = evals(levels=levels, num_chains=4, depth_subnets=8)
  if options.get('stpp'):
    config.method.update(STPP, max_shortening=STPP_RESNET50_MAX_SHORTENING)
  if options['smoke']:
    config.data.batch_size = 8
    config.data.eval_batch_size = 32
    config.data.options = dict(image_size=64, resize_size=73, test_split='validation[:64]')
    _smoke_durations(config, levels)
  return config


def _small_config(method: str, dataset: str, arg: str | None) -> ml_collections.ConfigDict:
  """digits / fashion_mnist; arg None or 'smoke'."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = method_fields(method)
  config.optim = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      schedule='cosine', warmup_steps=0, step_boundaries=(0.5, 0.75),
                      step_factor=0.1)
  _run_fields(config)
  if dataset == 'digits':
    # 8x8 images: ResNet-20 runs its stages at 8x8, 4x4 and 2x2.
    config.data = dict(name='digits', dir=placeholder(str), batch_size=64, eval_batch_size=400,
                       augment=dict(pad=1, flip=False))
    config.model = dict(arch='resnet20', width_multiplier=1.0, shortcut='pad',
                        conv_impl='auto')
    config.total_epochs = 30
    config.log_every_epochs = 3
    config.eval_every_epochs = 10
  elif dataset == 'fashion_mnist':
    config.data = dict(name='fashion_mnist', dir=placeholder(str), batch_size=128, eval_batch_size=500,
                       augment=dict(pad=2, flip=True))
    config.model = dict(arch='resnet20', width_multiplier=1.0, shortcut='pad',
                        conv_impl='auto')
    # A short schedule that fits 2 CPU cores (see README); longer: --config.total_epochs=N.
    config.total_epochs = 3
    config.log_every_steps = 100
    config.eval_every_epochs = 1
  else:
    raise ValueError(f'dataset={dataset!r} is not one of (\'digits\', \'fashion_mnist\')')
  if dataset == 'fashion_mnist':  # 10k test images per subnet pass: fewer subnets.
    config.evals = evals(levels=_levels(config), num_chains=4, depth_subnets=8)
  else:
    config.evals = evals(levels=_levels(config))
  if arg == 'smoke':
    _smoke_durations(config, _levels(config))
    if dataset == 'fashion_mnist':  # the whole test set took 258 s of a 4-step check
      config.data.options = dict(test_examples=500)
  elif arg:
    raise ValueError(f'config argument {arg!r} is not one of (None, \'smoke\')')
  return config


# Methods that run as stages of a ResKD chain (reskd/<dataset>.py), not on their own.
CHAIN_METHODS = ('kd', 'reskd')


def run_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The run configs in a config file's config: itself, or a ResKD chain's stages."""
  if 'num_res_students' in config:
    return [config.teacher, config.student, config.res_student]
  return [config]


# ResKD chain (reskd.md, our reading): res-student architectures by config.
RESKD_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995,
                    0.999, 1.01)


def reskd_chain_config(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The ResKD chain on a small dataset (see gkt_jax.pipelines.reskd_chain).

  Teacher: ResNet-20 (the baseline config); student: ResNet-8 x0.5 (KD); res-students:
  ResNet-8 x0.25, learning the logit residual. arg: comma-separated 'smoke' (4 steps per
  stage), 'res=K' (number of res-students, default 2), 'target=logits|kd',
  'student_features' (res-students also read the student's pre-logits).
  """
  options = parse_arg(arg, smoke=False, res=2, target='logits', student_features=False)
  smoke = 'smoke' if options['smoke'] else None
  config = ml_collections.ConfigDict()
  config.teacher = get_config('baseline', dataset, smoke)
  config.student = get_config('kd', dataset, smoke)
  config.student.model.update(arch='resnet8', width_multiplier=0.5)
  config.res_student = get_config('reskd', dataset, smoke)
  config.res_student.model.update(arch='resnet8', width_multiplier=0.25)
  config.res_student.method.update(residual_target=options['target'],
                                    student_features=options['student_features'])
  for stage in (config.teacher, config.student, config.res_student):
    stage.evals = {'full': dict(type='full')}
  config.num_res_students = options['res']
  config.analysis = dict(rule='max_prob', thresholds=RESKD_THRESHOLDS,
                         predictor_threshold=0.9, eval_batch_size=500)
  return config
