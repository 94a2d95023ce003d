"""GKT trains a ViT and a Wide ResNet on Fashion-MNIST: its loss falls and its subnets beat
those of the same network trained plainly (the baseline), which never learned to run with
blocks dropped.

Each network is trained twice from the same initial weights on the same batches (a fixed
class-stratified subset of the train split), by the baseline and by GKT, with AdamW (linear
warm-up, cosine decay), then its full network and a fixed set of subnets (nested chains of
GKT's bernoulli sampler) are evaluated on the first test images. Before a network with
BatchNorm is evaluated, its statistics are those of the evaluated subnet on 2,000 training
images: with the running statistics, which every subnet a step trains updates, this Wide
ResNet's subnets score 0.15-0.55 whichever method trained it (pre-activation blocks: dropping
one changes the scale of the final BatchNorm's input). Measured (2,000 test images): ViT full
0.801 baseline / 0.776 GKT, mean of the 12 subnets 0.672 / 0.766; WRN-16-1 full 0.850 /
0.840, subnets 0.766 / 0.831. Slow: 6 minutes on 2 CPU cores.
"""

import functools

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gkt_jax import data, masks, methods, models
from gkt_jax.models import wide_resnet
from gkt_jax.train.step import init_state, make_train_step

# Small members of each family (the ViT: 28x28 images in 7x7 patches, 4x4 tokens) and their
# training steps and peak learning rates.
_NETWORKS = {
    'vit': (lambda: models.vit.ViT(10, width=48, depth=6, heads=3, mlp_ratio=2, patch_size=7),
            800, 2e-3),
    'wrn': (lambda: wide_resnet.WideResNet(16, 1, 10), 300, 2e-3),
}
_BATCH = 64
_WARMUP_STEPS = 30
_TEST_IMAGES = 2000
_CHAINS, _LEVELS = 4, 3  # evaluated subnets: 4 nested chains of 3, as GKT's 2 loops of 3


@functools.lru_cache(maxsize=1)
def _fashion_mnist():
  return data.load_dataset('fashion_mnist', None, train_examples_per_class=500,
                           test_examples=_TEST_IMAGES)


def _train(model, method_name: str, steps: int, lr: float, seed: int = 0):
  """(variables, per-step 'ce/full') of `model` trained by the method for `steps` steps."""
  dataset = _fashion_mnist()
  method = methods.get_method({'name': method_name}, model)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, _WARMUP_STEPS, steps)
  tx = optax.adamw(schedule, weight_decay=1e-4)
  config = ml_collections.ConfigDict({'seed': seed})
  state = init_state(config, method.model, method, tx, dataset.train_images.shape[1:])
  step = jax.jit(make_train_step(method, tx, schedule, dataset.mean, dataset.std))
  order = np.random.default_rng(seed)
  losses = []
  for _ in range(steps):
    rows = order.choice(len(dataset.train_labels), _BATCH, replace=False)
    state, measurements = step(state, jnp.asarray(dataset.train_images[rows]),
                               jnp.asarray(dataset.train_labels[rows]))
    losses.append(float(measurements['ce/full']))
  return {'params': state.params, 'batch_stats': state.batch_stats}, np.array(losses)


def _accuracy(model, variables, keep_mask) -> float:
  """Test accuracy of the subnet `keep_mask`, with its own BatchNorm statistics (module
  docstring)."""
  dataset = _fashion_mnist()
  if variables['batch_stats']:  # momentum 0: the statistics of one batch of 2,000 images
    train_images = data.normalize(jnp.asarray(dataset.train_images[:2000]), dataset.mean,
                                  dataset.std)
    variables = {'params': variables['params'], 'batch_stats': _statistics(
        model.clone(bn_momentum=0.0), variables, train_images, keep_mask)}
  images = data.normalize(jnp.asarray(dataset.test_images), dataset.mean, dataset.std)
  logits = _logits(model, variables, images, keep_mask)
  return float(np.mean(np.argmax(logits, -1) == dataset.test_labels))


@functools.partial(jax.jit, static_argnums=0)
def _statistics(model, variables, images, keep_mask):
  return model.apply(variables, images, keep_mask=keep_mask, train=True,
                     mutable=['batch_stats'])[1]['batch_stats']


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, variables, images, keep_mask):
  return model.apply(variables, images, keep_mask=keep_mask, train=False)[0]


@pytest.mark.slow
class GKTOnFashionMNISTTest(parameterized.TestCase):

  @parameterized.parameters('vit', 'wrn')
  def test_loss_falls_and_subnets_beat_the_plain_networks(self, name):
    build, steps, lr = _NETWORKS[name]
    model = build()
    trained = {m: _train(model, m, steps, lr) for m in ('baseline', 'gkt')}
    gkt_losses = trained['gkt'][1]
    self.assertLess(gkt_losses[-20:].mean(), 0.6 * gkt_losses[:20].mean())
    chains = [masks.sample_nested_subnets(key, model.stage_sizes, _LEVELS, sampler='bernoulli')
              for key in jax.random.split(jax.random.key(1), _CHAINS)]
    subnets = jnp.concatenate(chains)
    self.assertLess(int(subnets.sum(-1).min()), model.num_blocks)  # blocks are dropped
    accuracy = {m: [_accuracy(model, trained[m][0], mask) for mask in subnets]
                for m in trained}
    full = {m: _accuracy(model, trained[m][0], jnp.ones(model.num_blocks, bool))
            for m in trained}
    print(f'{name}: full {full}; subnets (kept {subnets.sum(-1).tolist()}) {accuracy}')
    self.assertGreater(full['gkt'], 0.7)  # 10 classes: chance is 0.1
    self.assertGreater(np.mean(accuracy['gkt']), np.mean(accuracy['baseline']) + 0.02)


if __name__ == '__main__':
  absltest.main()
