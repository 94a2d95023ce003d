"""Training: `train_and_evaluate(config, workdir)`."""

from gkt_jax.train.step import TrainState, make_train_step
from gkt_jax.train.trainer import train_and_evaluate

__all__ = ['TrainState', 'make_train_step', 'train_and_evaluate']
