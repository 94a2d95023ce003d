#!/bin/bash
# Preemption demo (README): an uninterrupted 300-step GKT run on Fashion-MNIST, then the same
# run stopped by SIGTERM once step 125 is logged and started again with the same command.
# Compare workdirs/fmnist_gkt_short{_ref,}/summary.json afterwards. About 12 min on 2 cores.
set -eu
cd "$(dirname "$0")/.."
CMD=".venv/bin/python -m experiments.main --config experiments/configs/gkt/fashion_mnist_short.py"
rm -rf workdirs/fmnist_gkt_short_ref workdirs/fmnist_gkt_short
mkdir -p workdirs
$CMD --workdir workdirs/fmnist_gkt_short_ref > workdirs/short_ref.log 2>&1
$CMD --workdir workdirs/fmnist_gkt_short > workdirs/short_part1.log 2>&1 &
PID=$!
while ! grep -q '"step": 125' workdirs/fmnist_gkt_short/metrics.jsonl 2>/dev/null; do sleep 1; done
kill -TERM "$PID"
code=0; wait "$PID" || code=$?
echo "exit code after SIGTERM: $code" >> workdirs/short_part1.log
$CMD --workdir workdirs/fmnist_gkt_short > workdirs/short_part2.log 2>&1
grep -h "full network\|subnet level\|SIGTERM\|exit code\|resumed from" workdirs/short_*.log
