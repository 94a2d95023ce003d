"""Durations helper, learning-rate schedules and the optimiser."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl.testing import absltest, parameterized

from gkt_jax import utils
from gkt_jax.train import optim


class StepsTest(parameterized.TestCase):

  def test_steps_and_epochs(self):
    self.assertEqual(utils.steps('total', {'total_steps': 7}, 10), 7)
    self.assertEqual(utils.steps('total', {'total_epochs': 2.5}, 10), 25)
    self.assertEqual(utils.steps('total', {'total_epochs': 0.01}, 10), 1)
    self.assertEqual(utils.steps('log_every', {}, 10, default=3), 3)

  def test_both_forms_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'total_steps=5 and total_epochs=1'):
      utils.steps('total', {'total_steps': 5, 'total_epochs': 1}, 10)

  def test_non_positive_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'total_steps=0'):
      utils.steps('total', {'total_steps': 0}, 10)


class ScheduleTest(parameterized.TestCase):

  def _schedule(self, **fields):
    return optim.learning_rate_schedule(ml_collections.ConfigDict(fields), 100)

  def test_cosine(self):
    s = self._schedule(lr=0.1, schedule='cosine')
    np.testing.assert_allclose([s(0), s(50), s(100)], [0.1, 0.05, 0.0], atol=1e-7)

  def test_step(self):
    s = self._schedule(lr=0.1, schedule='step', step_boundaries=(0.5, 0.75), step_factor=0.1)
    np.testing.assert_allclose([s(49), s(50), s(74), s(75), s(99)],
                               [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)

  def test_warmup(self):
    s = self._schedule(lr=0.1, schedule='constant', warmup_steps=10)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60)], [0.0, 0.05, 0.1, 0.1], atol=1e-7)

  def test_bad_schedule(self):
    with self.assertRaisesRegex(ValueError, "optim.schedule='linear'"):
      self._schedule(lr=0.1, schedule='linear')


class OptimizerTest(absltest.TestCase):

  def test_pytorch_style_sgd(self):
    # PyTorch SGD: g' = g + wd * p; buf = m * buf + g'; nesterov step = g' + m * buf.
    config = ml_collections.ConfigDict(dict(lr=0.1, momentum=0.9, nesterov=True,
                                            weight_decay=0.01, schedule='constant'))
    tx, _ = optim.make_optimizer(config, 10)
    p = {'w': jnp.array([1.0, -2.0])}
    g = {'w': jnp.array([0.5, 0.25])}
    state = tx.init(p)
    buf = np.zeros(2)
    want = np.array([1.0, -2.0])
    for _ in range(3):
      updates, state = tx.update(g, state, p)
      p = optax.apply_updates(p, updates)
      g_wd = np.array([0.5, 0.25]) + 0.01 * want
      buf = 0.9 * buf + g_wd
      want = want - 0.1 * (g_wd + 0.9 * buf)
      np.testing.assert_allclose(p['w'], want, rtol=1e-6)


if __name__ == '__main__':
  absltest.main()
