"""Small timing probes behind the speed notes of docs/results.md and docs/usage.md: each
prints the medians of interleaved repeats measured in one process. Not part of the library's
API."""
