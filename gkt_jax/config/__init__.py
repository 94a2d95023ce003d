"""Every config section's settings: one frozen class per section holding its fields, their
defaults and their checks (see gkt_jax/settings.py), importable without JAX or Flax, so that
loading a config file builds no accelerator state.

  method.py  `config.method`: a settings class per method (`METHODS`, by name)
  model.py   `config.model`: a settings class per architecture family (`ARCHITECTURES`)
  data.py    `config.data`: dataset, batches, augmentation, dataset options
  optim.py   `config.optim`: SGD or AdamW, warm-up and schedule
  evals.py   `config.evals`: a settings class per evaluator type (`EVALUATORS`)
  run.py     the run's own top-level fields (seed, parallelism, checkpoints, ...)
  names.py   the value sets these share with the code that uses them (samplers, ...)

Each section module has `read(section) -> Settings`, the checked settings of a config section
with absent fields at their defaults. Rules between sections (a batch divisible by the device
count, a method's fields against the model's stage sizes) are in gkt_jax/train/validate.py.
"""
