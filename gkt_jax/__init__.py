"""gkt_jax: residual networks trained with the knowledge of their own subnets.

Pure functions: `gkt_jax.masks` (subnet keep masks), `gkt_jax.groups` (group knowledge),
`gkt_jax.losses`. Models: `gkt_jax.models`. Methods: `gkt_jax.methods`. Training:
`gkt_jax.train.train_and_evaluate(config, workdir)`.
"""

__version__ = '0.1.0'
