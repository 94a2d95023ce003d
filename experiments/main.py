r"""Trains and evaluates one method, as a config file describes.

  python -m experiments.main --config experiments/configs/gkt/digits.py \
      --workdir /tmp/gkt_digits [--config.total_epochs=10 ...]

The config file's `get_config(arg)` takes the text after a colon (`digits.py:smoke`).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gkt_jax.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes its outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # JAX logs its backend probing (libtpu, proxy) at INFO; progress is printed anyway.
    logging.set_verbosity(logging.WARNING)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except FileNotFoundError as e:  # missing data: the message says how to get it
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  app.run(main)
