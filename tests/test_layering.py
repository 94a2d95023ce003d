"""The training loop knows no method: nothing under gkt_jax/train/ names a method, one of
its settings or one of its metrics (they reach the trainer through the Method interface)."""

import glob
import os
import re

from absl.testing import absltest

from gkt_jax import methods
from gkt_jax.config import evals as evals_config
from gkt_jax.config import method as method_config
from gkt_jax.config import model as model_config
from gkt_jax.config import optim as optim_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Metric and concept names of single methods (progress line, plots, export, checks).
METHOD_WORDS = ('ce/full', 'ce/sampled', 'kd', 'att', 'classmate', 'frozen', 'bn_momentum',
                'max_shortening', 'teacher')


def method_words() -> set[str]:
  """Method names, every method-only settings field and METHOD_WORDS; fields that other
  sections share (an optimiser's momentum, an evaluator's sampler) are not a method's."""
  shared = set(method_config.MethodSettings.names()) | set(
      optim_config.OptimSettings.names())
  for cls in list(evals_config.EVALUATORS.values()) + list(model_config.FAMILIES.values()):
    shared |= set(cls.names())
  words = set(methods.REGISTRY) | set(METHOD_WORDS)
  for cls in set(method_config.METHODS.values()):
    words |= set(cls.names()) - shared
  return words


class TrainerKnowsNoMethodTest(absltest.TestCase):

  def test_no_file_under_train_names_a_method_or_its_fields(self):
    words = method_words()
    self.assertContainsSubset({'gkt', 'loops', 'bn_stats', 'kd', 'frozen'}, words)
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, 'gkt_jax', 'train', '*.py'))):
      with open(path) as f:
        lines = f.read().replace('frozen=True', '').splitlines()  # dataclass(frozen=True)
      for number, line in enumerate(lines, 1):
        for word in words:
          if re.search(r'(?<![\w/])' + re.escape(word) + r'(?![\w/])', line):
            found.append(f'{os.path.relpath(path, REPO)}:{number}: {word!r}: {line.strip()}')
    self.assertEqual(found, [], '\n'.join(found))


if __name__ == '__main__':
  absltest.main()
