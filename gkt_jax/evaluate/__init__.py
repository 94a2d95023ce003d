"""Evaluation: evaluators chosen by config; the FLOP counts of `gkt_jax.models.cost`,
re-exported (their home is beside the models they count)."""

from gkt_jax.evaluate.evaluators import (CURVE_PREFIXES, EVALUATORS, MASKS_PER_CALL,
                                         EvalRunner, bn_recalibration, level_points,
                                         make_recalibrator,
                                         recalibrate_batch_stats, run_evaluators,
                                         summary_rows)
from gkt_jax.models.cost import block_flops, forward_flops, masks_flops, xla_forward_flops

__all__ = [
    'CURVE_PREFIXES', 'EVALUATORS', 'MASKS_PER_CALL', 'EvalRunner', 'block_flops',
    'bn_recalibration', 'forward_flops',
    'level_points', 'make_recalibrator', 'masks_flops', 'recalibrate_batch_stats', 'run_evaluators',
    'summary_rows', 'xla_forward_flops'
]
