"""Small datasets held in memory: sources, augmentation and batching.

`load_dataset(name, data_dir=None) -> ArrayDataset` ('digits', 'fashion_mnist', 'mnist');
`normalize` and `pad_crop_flip` (numpy, host side); `TrainBatches` (batches that depend only
on (seed, step), so resuming needs only the step) and `eval_batches` (fixed-shape batches
with a count of real rows).
"""

from gkt_jax.data.augment import normalize
from gkt_jax.data.augment import pad_crop_flip
from gkt_jax.data.idx import read_idx
from gkt_jax.data.pipeline import eval_batches
from gkt_jax.data.pipeline import TrainBatches
from gkt_jax.data.sources import ArrayDataset
from gkt_jax.data.sources import DATASETS
from gkt_jax.data.sources import digits_split_indices
from gkt_jax.data.sources import FASHION_MNIST_DIR
from gkt_jax.data.sources import load_dataset

__all__ = [
    'ArrayDataset', 'DATASETS', 'FASHION_MNIST_DIR', 'TrainBatches', 'digits_split_indices',
    'eval_batches', 'load_dataset', 'normalize', 'pad_crop_flip', 'read_idx',
]
