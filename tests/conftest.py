"""pytest set-up: absl flags count as parsed (grain's loaders read them)."""

from absl import flags

flags.FLAGS.mark_as_parsed()
