"""A ViT run read back and exported: its position grid is the one it trained at.

A ViT's parameters depend on its input side (patch side and position grid, fixed at init),
so reading its checkpoint must build the model at the size it trained at: 8x8 digits give
2x2 patches and a 4x4 grid (16 tokens), where a 32x32 input would give 64 tokens.
"""

import os

import jax
import numpy as np
from absl.testing import absltest

from gkt_jax import methods, models
from gkt_jax.train import export, train_and_evaluate
import workers


class ExportViTTest(absltest.TestCase):

  def test_a_vit_trained_on_8x8_digits_is_read_and_exported(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, 'run')
    config = workers.smoke_config('baseline', {
        'model': dict(arch='vit_ti', depth=2, width=16, heads=2, mlp_ratio=2, conv_impl='xla'),
        'total_steps': 2, 'log_every_steps': 1, 'eval_every_steps': 2})
    _, state = train_and_evaluate(config, workdir, return_state=True)
    trained = {'params': state.params, 'batch_stats': state.batch_stats}
    self.assertEqual(np.shape(state.params['position']), (1, 16, 16))
    images = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    plain = models.from_config(config.model, 10)
    expected = np.asarray(methods.get_method(config.method, plain).predict(trained, images))

    model, variables, _ = export.load_run(workdir)
    self.assertEqual(np.shape(variables['params']['position']), (1, 16, 16))
    np.testing.assert_array_equal(model.apply(variables, images)[0], expected)

    out = os.path.join(root, 'export')
    export.export_main_path(workdir, out)
    model, variables = export.load_exported(out)
    np.testing.assert_array_equal(model.apply(variables, images)[0], expected)


if __name__ == '__main__':
  absltest.main()
