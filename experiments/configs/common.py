"""Shared pieces of the experiment configs: recipes, data and model sections, evaluator sets.

Each file experiments/configs/<method>/<dataset>.py says what it runs (data, model, recipe,
method overrides) from these pieces; a method's defaults come from its settings class
(gkt_jax/methods/). `get_config(method, dataset, arg)` returns a file's config by name.
"""

from __future__ import annotations

import importlib

import ml_collections
from ml_collections.config_dict import placeholder

from gkt_jax import masks, methods, models
from gkt_jax.train import optim, run_settings


def method_fields(method: str) -> dict:
  """The `config.method` defaults of a method: its settings class's (gkt_jax/methods/, the
  specs in shared/methods/), with fresh placeholders for fields whose default is None."""
  if method not in methods.REGISTRY:
    raise ValueError(f'method={method!r} is not one of {tuple(methods.REGISTRY)}')
  return methods.REGISTRY[method].default_config()


def levels(config: ml_collections.ConfigDict):
  """The subnet evaluators' levels: method.levels itself (a FieldReference, so that
  --config.method.levels=4 reaches the evaluators too), else 3."""
  return (config.method.get_ref('levels') if 'levels' in config.method
          else masks.DEFAULT_LEVELS)


def evals(levels: int = masks.DEFAULT_LEVELS, num_chains: int = 8, depth_subnets: int = 16,
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
# The datasets of the config files (not every method has a file for each).
DATASETS = ('digits', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet2012')

# The optimiser's defaults (SGD, Nesterov, lr 0.1, weight decay 5e-4, cosine): its settings
# class's, each recipe below over them.
_OPTIM_BASE = optim.section_defaults()
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
# CIFAR recipes of the other families, which their networks always run (our choices where no
# spec gives one). Wide ResNets: the WRN paper's CIFAR recipe (Zagoruyko & Komodakis 2016:
# SGD Nesterov 0.9, lr 0.1 x0.2 at 30/60/80 % of 200 epochs, weight decay 5e-4, batch 128,
# dropout 0.3 in its best CIFAR results). ViTs from scratch: AdamW, lr 1e-3 after a linear
# warm-up of 5 epochs (1,955 steps of 128), cosine, weight decay 0.05, 200 epochs.
FAMILY_RECIPES = {
    'wrn': dict(epochs=200, batch_size=128, augment=dict(pad=4, flip=True),
                optim=dict(lr=0.1, weight_decay=5e-4, schedule='step',
                           step_boundaries=(0.3, 0.6, 0.8), step_factor=0.2),
                model=dict(dropout_rate=0.3)),
    'vit': dict(epochs=200, batch_size=128, augment=dict(pad=4, flip=True),
                optim=optim.section_defaults(optim.ADAMW_FIELDS, optimizer='adamw', lr=1e-3,
                                             weight_decay=0.05, warmup_steps=1955)),
}
# A ViT on the small datasets (digits, Fashion-MNIST): AdamW at their lengths.
SMALL_VIT_OPTIM = optim.section_defaults(optim.ADAMW_FIELDS, optimizer='adamw', lr=1e-3,
                                         weight_decay=0.05, warmup_steps=100)


def family(arch: str) -> str:
  """'resnet', 'wrn', 'vit' (by the registered name's prefix) or 'other'."""
  return next((f for f in ('resnet', 'wrn', 'vit') if arch.startswith(f)), 'other')
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
      try:
        out[key] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {token!r}: {key} must be of type '
                         f'{type(default).__name__}') from None
  return out


# Config files by dataset name, where the file is named otherwise.
_CONFIG_FILES = {'imagenet2012': 'imagenet'}


def get_config(method: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of experiments/configs/<method>/<dataset>.py ('imagenet2012': imagenet.py)
  with its argument `arg` (see each file's docstring). A ResKD chain stage ('kd', 'reskd')
  runs on the baseline's config with its own method section."""
  if method in CHAIN_METHODS:
    config = get_config('baseline', dataset, arg)
    config.method = method_fields(method)
    return config
  if method not in methods.REGISTRY:
    raise ValueError(f'method={method!r} is not one of {tuple(methods.REGISTRY)}')
  module = f'experiments.configs.{method}.{_CONFIG_FILES.get(dataset, dataset)}'
  try:
    file = importlib.import_module(module)
  except ModuleNotFoundError:
    raise ValueError(f'dataset={dataset!r}: no config file {module} for method {method!r}; '
                     f'datasets with config files: {DATASETS}') from None
  return file.get_config(arg)


def _run_fields(config: ml_collections.ConfigDict) -> None:
  """Durations (set *_steps or *_epochs, one of each pair; checkpoints default to every
  evaluation, plus the end of training and SIGTERM) and the run's own fields at their
  defaults (gkt_jax.train.run_settings.RunSettings: parallelism, checkpoints, resume/init,
  plots, the training-accuracy sample, the changes a resume may make)."""
  for prefix in run_settings.DURATION_PREFIXES:
    config[f'{prefix}_steps'] = placeholder(int)
    config[f'{prefix}_epochs'] = placeholder(float)
  config.update(run_settings.RunSettings.defaults())


def base(method: str, recipe: dict | None = None, arch: str = 'resnet20'
         ) -> ml_collections.ConfigDict:
  """Seed 0, the method's defaults, the optimiser (the recipe's over the base SGD, with its
  length; without a recipe the base SGD, or AdamW for a ViT) and the run fields; the file
  adds data, model, cadence and evaluators."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = method_fields(method)
  recipe_optim = (recipe or {}).get('optim', {})
  if recipe is None and family(arch) == 'vit':
    config.optim = dict(SMALL_VIT_OPTIM)
  elif 'optimizer' in recipe_optim:  # a whole section of its own (AdamW)
    config.optim = dict(recipe_optim)
  else:
    config.optim = dict(_OPTIM_BASE, **recipe_optim)
  _run_fields(config)
  if recipe is not None:
    config.total_epochs = float(recipe['epochs'])
  return config


def _smoke_durations(config: ml_collections.ConfigDict) -> None:
  config.total_epochs = None
  config.log_every_epochs = None
  config.eval_every_epochs = None
  config.total_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 2
  config.evals = evals(levels=levels(config), num_chains=2, depth_subnets=3, deletion=False)


def resnet(arch: str, **fields) -> dict:
  """A model section: `arch` at width 1 with the XLA convolution chosen per backend."""
  return dict(dict(arch=arch, width_multiplier=1.0, shortcut='pad', conv_impl='auto'), **fields)


# ----- digits and Fashion-MNIST: in-memory, a short cosine schedule on 2 CPU cores -----

def data_options(**options) -> dict:
  """A data section's `options`: `train_examples_per_class` (None: the whole train split;
  n: a fixed class-stratified subset, n images of every class; every dataset) and the
  dataset's own."""
  return dict(train_examples_per_class=placeholder(int), **options)


def digits_data() -> dict:
  """8x8 images: ResNet-20 runs its stages at 8x8, 4x4 and 2x2."""
  return dict(name='digits', dir=placeholder(str), batch_size=64, eval_batch_size=400,
              augment=dict(pad=1, flip=False), options=data_options())


def digits_model(arch: str) -> dict:
  """`model(arch)`; a ResNet's blocks get no boundary (`block_barriers='none'`, i.e. False).

  At 8x8 the CPU default (each block in a cond) runs no faster and its gradient's first call
  (trace, compile, one run) takes about 50 % longer: ResNet-20 gradient at batch 64, cond
  1.032x the barrier's median time, flat 1.023x; first calls 2.09 s, 1.45 s (barrier) and
  1.40 s (flat) (`python -m experiments.probes.block_boundaries resnet20 pad 10 21 64 8 1`,
  2-core EPYC, 2026-12-03). The default test suite, which trains digits configs throughout,
  ran its pytest part in 10:12 before this and 7:43 after (fresh clones, quiet)."""
  section = model(arch)
  if arch.startswith('resnet'):
    section['block_barriers'] = 'none'  # False, by name: `--config.model.block_barriers=cond`
  return section


def fashion_mnist_data() -> dict:
  return dict(name='fashion_mnist', dir=placeholder(str), batch_size=128, eval_batch_size=500,
              augment=dict(pad=2, flip=True), options=data_options())


def _check_arch(arch: str) -> None:
  """A config argument arch=NAME names a registered network."""
  if arch not in models.ARCHITECTURES:
    raise ValueError(f"config argument arch={arch!r} is not one of "
                     f"{tuple(models.ARCHITECTURES)}")


def small_options(arg: str | None) -> dict:
  """A digits / Fashion-MNIST file's arguments: 'smoke' (4 steps) and 'arch=NAME' (any
  registered network, default resnet20, e.g. vit_ti or wrn16_4)."""
  options = parse_arg(arg, smoke=False, arch='resnet20')
  _check_arch(options['arch'])
  return options


def model(arch: str) -> dict:
  """The model section of `arch`: a ResNet's as `resnet`; another network's defaults."""
  if arch.startswith('resnet'):
    return resnet(arch)
  return dict(arch=arch, conv_impl='auto')


def small_smoke(config: ml_collections.ConfigDict) -> None:
  """4 steps; 500 Fashion-MNIST test images (the whole test set took 258 s of a 4-step
  check)."""
  _smoke_durations(config)
  if config.data.name == 'fashion_mnist':
    config.data.options.test_examples = 500


# ----- CIFAR-10/100 (tfds) -----

def cifar_options(arg: str | None, **defaults) -> dict:
  """A CIFAR file's arguments: smoke, arch (resnet56; any registered network), recipe
  ('stimulative'; one of CIFAR_RECIPES, for a ResNet: a WRN or ViT runs its family's recipe,
  FAMILY_RECIPES), and the file's own `defaults` (e.g. stpp=False, another arch or recipe)."""
  options = parse_arg(arg, **dict(dict(smoke=False, arch='resnet56', recipe='stimulative'),
                                  **defaults))
  if options['recipe'] not in CIFAR_RECIPES:
    raise ValueError(f"config argument recipe={options['recipe']!r} is not one of "
                     f"{CIFAR_RECIPES}")
  _check_arch(options['arch'])
  return options


def cifar_recipe(name: str, dataset: str, arch: str) -> dict:
  """RECIPES[name] for a ResNet, FAMILY_RECIPES[family] for a WRN or ViT (whatever `name`);
  'ekd_fws' takes the spec's learning rate for (dataset, arch), for any method (so that its
  baseline is comparable)."""
  if family(arch) in FAMILY_RECIPES:
    return FAMILY_RECIPES[family(arch)]
  recipe = RECIPES[name]
  if name == 'ekd_fws':
    recipe = dict(recipe, optim=dict(recipe['optim'], lr=ekd_cifar(dataset, arch)[0]))
  return recipe


def ekd_cifar(dataset: str, arch: str) -> tuple[float, float, float, float]:
  """EKD_CIFAR[dataset, arch]: lr, kd_weight, att_weight, label_smoothing."""
  if (dataset, arch) not in EKD_CIFAR:
    raise ValueError(f'recipe ekd_fws on {dataset}: arch={arch!r} has no values in the spec; '
                     f'allowed: {sorted(a for d, a in EKD_CIFAR if d == dataset)}')
  return EKD_CIFAR[dataset, arch]


def cifar_data(dataset: str, recipe: dict) -> dict:
  """cache: 60,000 32x32 images decoded into memory once (180 MB, a few seconds)."""
  return dict(name=dataset, dir=placeholder(str), batch_size=recipe['batch_size'],
              eval_batch_size=500, augment=dict(recipe['augment']),
              options=data_options(cache=True))


def cifar_model(arch: str, recipe: dict) -> dict:
  """A CIFAR network: ResNet-18/34/50 on 32x32 inputs get the CIFAR stem; other families
  their defaults and the recipe's model fields (a WRN's dropout)."""
  if arch in FOUR_STAGE_ARCHS:
    return resnet(arch, stem='cifar', shortcut='projection')
  if family(arch) == 'resnet':
    return resnet(arch)
  return dict(model(arch), **recipe.get('model', {}))


def cifar_smoke(config: ml_collections.ConfigDict) -> None:
  """4 steps of ResNet-20 at batch 32, evaluated on 200 test images."""
  config.model.arch = 'resnet20'
  config.data.batch_size = 32
  config.data.eval_batch_size = 100
  config.data.options.update(cache=False, test_split='test[:200]')
  _smoke_durations(config)


# ----- ImageNet-1k (tfds imagenet2012) -----

def imagenet_data(recipe: dict) -> dict:
  return dict(name='imagenet2012', dir=placeholder(str), batch_size=recipe['batch_size'],
              eval_batch_size=500, augment=dict(recipe['augment']),
              options=data_options(image_size=224, resize_size=256))


def imagenet_smoke(config: ml_collections.ConfigDict) -> None:
  """4 steps at batch 8 on 64x64 crops, 64 validation images."""
  config.data.batch_size = 8
  config.data.eval_batch_size = 32
  config.data.options.update(image_size=64, resize_size=73, test_split='validation[:64]')
  _smoke_durations(config)


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
