"""Pipelines: several training runs chained into one experiment, above `gkt_jax.train`
(ResKD: teacher, student, then res-students trained against the frozen earlier stages)."""
