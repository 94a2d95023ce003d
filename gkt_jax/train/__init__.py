"""Training: `train_and_evaluate(config, workdir)`."""

from gkt_jax.train.trainer import TrainState, make_train_step, train_and_evaluate

__all__ = ['TrainState', 'make_train_step', 'train_and_evaluate']
