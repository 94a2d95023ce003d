r"""Where the time of one training step goes: a profiler trace of a method's step, summed by
the part of the step each XLA operation belongs to.

  python -m experiments.profile_step --method gkt --arch resnet56 --batch 128 --steps 3
  python -m experiments.profile_step ... --trace_dir /tmp/gkt_trace   # keep the trace (Perfetto)

The step is bench_step's (same random inputs, same config defaults), compiled once and run
twice before `--steps` steps are traced with `jax.profiler`. Every traced XLA operation is
matched to its instruction in the compiled HLO, whose metadata names the JAX code it came
from; its self time (its duration less that of the operations nested in it, as a `cond`
holds its branch) is added to
  part   full network forward / backward, subnets forward / backward (the methods' scan
         over sampled subnets, `jax.named_scope('subnets')`; for ST and GKT the scan's first
         pass is the full network's), optimizer update, other;
         backward includes the forward work that rematerialisation repeats
  kind   convolutions, other fused work (BN, ReLU, losses, adds), transposes and copies,
         control flow (what `cond`/`while` themselves take), other.
Shares are of the operations' summed self time, which can exceed the wall time when XLA runs
operations on several threads at once; the wall time per traced step is printed beside it.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from absl import app, flags
import jax

from experiments import bench_step, cli
from gkt_jax.train import reporting

_METHOD = flags.DEFINE_string('method', 'gkt', 'Method whose step is profiled.')
_TRACE_DIR = flags.DEFINE_string('trace_dir', None, 'Keep the trace here (default: a '
                                 'temporary directory, deleted).')

PARTS = ('full network forward', 'full network backward', 'subnets forward',
         'subnets backward', 'optimizer', 'other')
KINDS = ('convolutions', 'other fused work', 'transposes and copies', 'control flow', 'other')

# `%name = <shape> opcode(`: the shape is a token or a parenthesised tuple.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = (?:\([^()]*\)|\S+) ([\w\-]+)\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (opcode, op_name metadata)} of every instruction in HLO text."""
  out = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      out[match.group(1)] = (match.group(2), op_name.group(1) if op_name else '')
  return out


def part_of(op_name: str) -> str:
  """The part of the step (PARTS) an operation with this op_name metadata belongs to."""
  if '/optimizer' in op_name:
    return 'optimizer'
  backward = 'transpose(' in op_name
  if '/subnets' in op_name:
    return 'subnets backward' if backward else 'subnets forward'
  if '/full_network' in op_name or 'ResNet' in op_name:
    return 'full network backward' if backward else 'full network forward'
  return 'other'


def kind_of(name: str, opcode: str, op_name: str) -> str:
  """The kind of work (KINDS) of one instruction."""
  if opcode in ('conditional', 'while', 'call'):
    return 'control flow'
  if opcode == 'convolution' or op_name.endswith('conv_general_dilated'):
    return 'convolutions'
  if opcode in ('transpose', 'copy') or 'transpose' in name or 'copy' in name:
    return 'transposes and copies'
  if opcode == 'fusion':
    return 'other fused work'
  return 'other'


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
  """(event, self time in us) of complete ('X') trace events: duration less the durations of
  the events nested directly in it on the same thread."""
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e:
      by_thread[(e.get('pid'), e.get('tid'))].append(e)
  out = []
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e['ts'], -e['dur']))
    stack: list[list] = []  # [event, end, children's time]
    for e in thread_events:
      end = e['ts'] + e['dur']
      while stack and e['ts'] >= stack[-1][1]:
        done = stack.pop()
        out.append((done[0], done[0]['dur'] - done[2]))
      if stack:
        stack[-1][2] += e['dur']
      stack.append([e, end, 0.0])
    out.extend((item[0], item[0]['dur'] - item[2]) for item in stack)
  return out


def attribute(events: list[dict], instructions: dict[str, tuple[str, str]]) -> dict:
  """Self time (us) of the traced XLA operations by part, by kind, and by both."""
  by_part = collections.Counter()
  by_kind = collections.Counter()
  by_both = collections.Counter()
  for event, seconds in self_times(events):
    if event['name'] not in instructions:
      continue  # runtime, Python and executor events
    opcode, op_name = instructions[event['name']]
    part, kind = part_of(op_name), kind_of(event['name'], opcode, op_name)
    by_part[part] += seconds
    by_kind[kind] += seconds
    by_both[part, kind] += seconds
  return {'part': by_part, 'kind': by_kind, 'both': by_both,
          'total': sum(by_part.values())}


def read_trace(trace_dir: str) -> list[dict]:
  paths = glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)
  if not paths:
    raise RuntimeError(f'no perfetto trace was written under {trace_dir}')
  with gzip.open(sorted(paths)[-1]) as f:
    trace = json.load(f)
  return trace['traceEvents'] if isinstance(trace, dict) else trace


def profile(method: str, arch: str, batch: int, steps: int, side: int, conv_impl: str,
            width: float, channels: int, dtype: str, trace_dir: str) -> dict:
  """Traces `steps` compiled steps of `method`; returns the attribution and wall times."""
  step_impl, _, state, args = bench_step.build_step(method, arch, batch, side, conv_impl,
                                                    width, channels, dtype)
  compiled = jax.jit(step_impl, donate_argnums=0).lower(state, *args).compile()
  instructions = hlo_instructions(compiled.as_text())
  for _ in range(2):
    state, measurements = compiled(state, *args)
    jax.block_until_ready(measurements)
  walls = []
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      t0 = time.perf_counter()
      state, measurements = compiled(state, *args)
      jax.block_until_ready(measurements)
      walls.append(time.perf_counter() - t0)
  result = attribute(read_trace(trace_dir), instructions)
  result['wall_seconds_per_step'] = sum(walls) / len(walls)
  result['steps'] = steps
  return result


def format_report(result: dict, title: str) -> str:
  total = result['total'] or 1.0
  steps = result['steps']
  lines = [title, '', f'Wall time per step {result["wall_seconds_per_step"]:.3f} s; traced '
           f'operations\' self time per step {result["total"] / steps / 1e6:.3f} s.', '',
           '| part of the step | share | ' + ' | '.join(KINDS) + ' |',
           '|---|---|' + '---|' * len(KINDS)]
  for part in PARTS:
    if not result['part'][part]:
      continue
    cells = [f'{100 * result["both"][part, k] / total:.1f}%' for k in KINDS]
    lines.append(f'| {part} | {100 * result["part"][part] / total:.1f}% | '
                 + ' | '.join(cells) + ' |')
  lines.append('| all | 100% | ' + ' | '.join(
      f'{100 * result["kind"][k] / total:.1f}%' for k in KINDS) + ' |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  flags_ = flags.FLAGS
  if len(flags_.arch) != 1:
    raise app.UsageError(f'--arch: profile one architecture at a time, got {flags_.arch}')
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix='gkt_jax_profile_')
  result = profile(_METHOD.value, flags_.arch[0], flags_.batch, flags_.steps,
                   flags_.image_size, flags_.conv_impl, flags_.width_multiplier,
                   flags_.channels, flags_.dtype, trace_dir)
  print(format_report(result, f'{_METHOD.value} step, {flags_.arch[0]}, batch {flags_.batch}, '
                      f'{flags_.steps} traced steps, {flags_.dtype}; {reporting.machine()}; '
                      f'code {reporting.code_version()}'))
  if _TRACE_DIR.value:
    print(f'trace: {trace_dir} (open perfetto_trace.json.gz at ui.perfetto.dev)')
  else:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(trace_dir, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
