"""A new subnet-distillation method is one class and one registry entry (issue 16): the
trainer, the config checks, the evaluators and the summary take it by name."""

import dataclasses
from unittest import mock

from absl.testing import absltest
import jax
import ml_collections

from experiments.configs import common
from gkt_jax import masks, methods
from gkt_jax.methods.base import Method
from gkt_jax.methods.subnet_distillation import DistillationSettings, SelfDistillation
from gkt_jax.settings import integer, probability, setting
from gkt_jax.train import train_and_evaluate


@dataclasses.dataclass(frozen=True)
class _Settings(DistillationSettings):
  n_sub: int = setting(2, integer(1))
  drop_prob: float = setting(0.3, probability)  # the method's one new setting


class _BernoulliDistillation(SelfDistillation, Method):
  """Stimulative training with subnets that drop each droppable block with `drop_prob`."""
  name = 'bernoulli_distillation'
  Settings = _Settings

  def __init__(self, config, model):
    super().__init__(config, model)
    self.levels = 1

  def sample_masks(self, key) -> jax.Array:
    keys = jax.random.split(key, self.settings.n_sub)
    return jax.vmap(lambda k: masks.sample_subnet(
        k, self.stage_sizes, sampler='bernoulli', drop_prob=self.settings.drop_prob))(keys)


def _config(**method_fields) -> ml_collections.ConfigDict:
  config = common.get_config('stimulative', 'digits', 'smoke')
  config.method = ml_collections.ConfigDict(
      {**_BernoulliDistillation.default_config(), **method_fields})
  config.total_steps, config.eval_every_steps = 2, 2
  config.evals = {'full': {'type': 'full'},
                  'deletion': {'type': 'block_deletion', 'final_only': True}}
  config.verbose, config.plots = False, False
  return config


@mock.patch.dict(methods.REGISTRY, {_BernoulliDistillation.name: _BernoulliDistillation})
class NewMethodTest(absltest.TestCase):

  def test_trains_evaluates_and_reports_by_name(self):
    summary = train_and_evaluate(_config(drop_prob=0.5, n_sub=3),
                                 self.create_tempdir().full_path)
    self.assertEqual(summary['method'], 'bernoulli_distillation')
    self.assertEqual(summary['steps'], 2)
    self.assertEqual(summary['forwards_per_step'], 4)  # the full network + 3 subnets
    self.assertLen(summary['block_deletion'], 6)        # ResNet-20: 9 blocks, 3 stage-first

  def test_its_setting_is_checked_by_the_config_checks(self):
    with self.assertRaisesRegex(ValueError, r'config\.method\.drop_prob=1\.5: .*probability'):
      train_and_evaluate(_config(drop_prob=1.5), self.create_tempdir().full_path)
    with self.assertRaisesRegex(ValueError, r'drop_rate'):
      train_and_evaluate(_config(drop_rate=0.1), self.create_tempdir().full_path)


if __name__ == '__main__':
  absltest.main()
