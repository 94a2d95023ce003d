"""The run's own fields (gkt_jax.config.run), under their former name."""

from gkt_jax.config.run import (DURATION_PREFIXES, PARALLEL_MODES, SECTIONS, RunSettings,
                                read)

__all__ = ['DURATION_PREFIXES', 'PARALLEL_MODES', 'SECTIONS', 'RunSettings', 'read']
