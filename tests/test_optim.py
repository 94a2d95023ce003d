"""Durations helper, learning-rate schedules and the optimiser."""

import jax
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

  def test_only_lr_is_the_config_files_default_optimizer(self):
    from experiments.configs import common  # pylint: disable=g-import-not-at-top
    config = common.get_config('baseline', 'digits')
    self.assertEqual(optim.read(config.optim), optim.read({'lr': config.optim.lr}))
    params = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array([0.3])}
    grads = {'w': jnp.array([0.5, 0.25]), 'b': jnp.array([-1.0])}
    trajectories = []
    for section in (config.optim, {'lr': config.optim.lr}):
      tx, _ = optim.make_optimizer(section, 100)
      p, state = params, tx.init(params)
      for _ in range(3):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
      trajectories.append(p)
    # Nesterov SGD with weight decay 5e-4: not plain SGD (which a missing field once gave).
    plain, _ = optim.make_optimizer({'lr': 0.1, 'nesterov': False, 'weight_decay': 0.0}, 100)
    plain_update, _ = plain.update(grads, plain.init(params), params)
    self.assertFalse(np.allclose(optax.apply_updates(params, plain_update)['w'],
                                 trajectories[0]['w']))
    jax.tree.map(np.testing.assert_array_equal, trajectories[0], trajectories[1])

  def test_adamw_with_warmup(self):
    tx, schedule = optim.make_optimizer(
        {'optimizer': 'adamw', 'lr': 1e-3, 'weight_decay': 0.05, 'warmup_steps': 10,
         'b2': 0.99}, 110)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(110)],
                               [0.0, 5e-4, 1e-3, 0.0], atol=1e-9)
    # optax.adamw's first step at the schedule's step-0 rate (0): only the decoupled decay,
    # times lr 0; at step 1, lr = 1e-4: m/(sqrt(v)+eps) is sign(g) for the first moment.
    p = {'w': jnp.array([1.0, -2.0])}
    g = {'w': jnp.array([0.5, -0.25])}
    state = tx.init(p)
    updates, state = tx.update(g, state, p)
    np.testing.assert_allclose(updates['w'], [0.0, 0.0], atol=1e-12)
    updates, state = tx.update(g, state, p)
    lr = 1e-4
    m_hat = np.array([0.5, -0.25])  # bias-corrected moments of a constant gradient
    want = -lr * (m_hat / (np.abs(m_hat) + 1e-8) + 0.05 * np.array([1.0, -2.0]))
    np.testing.assert_allclose(updates['w'], want, rtol=1e-5)


if __name__ == '__main__':
  absltest.main()
