"""Evaluation: evaluators chosen by config, and cost (FLOPs) accounting."""

from gkt_jax.evaluate.cost import block_flops, forward_flops, masks_flops, xla_forward_flops
from gkt_jax.evaluate.evaluators import (EVALUATORS, EvalRunner, make_recalibrator,
                                         recalibrate_batch_stats, run_evaluators)

__all__ = ['EVALUATORS', 'EvalRunner', 'block_flops', 'forward_flops', 'make_recalibrator',
           'masks_flops', 'recalibrate_batch_stats', 'run_evaluators', 'xla_forward_flops']
