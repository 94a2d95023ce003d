"""The plain ResNet's train-mode gradient and eval forward under XLA CPU flag settings that
could hand the convolutions to a library (oneDNN, YNNPACK). XLA reads its flags once per
process, so each setting runs in its own process: `rounds` rounds, the settings alternating
within each; in a process, 7 interleaved repeats of the two calls, medians. The logits' sum
shows whether a library took the convolutions (a bitwise-equal sum suggests it did not).

  python -m experiments.probes.xla_flags resnet56 2     # arch, rounds

Projection shortcuts, 100 classes, batch 128, 32x32x3, the default block boundaries.
"""
import json
import os
import subprocess
import sys

SETTINGS = {
    'none': '',
    'onednn': '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true',
    'onednn fusion': ('--xla_cpu_experimental_onednn_fusion_type='
                      'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'),
    'ynn fusion': ('--xla_cpu_experimental_ynn_fusion_type='
                   'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'),
}


def measure(arch: str) -> dict:
  """One process's medians (ms) and the eval logits' sum."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments.probes import timing  # pylint: disable=g-import-not-at-top
  from gkt_jax import models  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (128,), 0, 100)
  model = models.build_model(arch, 100, shortcut='projection')
  variables = model.init(jax.random.key(2), x[:1], train=False)
  forward = jax.jit(lambda v: model.apply(v, x, train=False)[0])
  medians = timing.interleaved_medians(
      {'gradient': (timing.gradient_fn(model, variables, x, y), None),
       'eval': (forward, variables)}, 7)
  return {'gradient_ms': medians['gradient'] * 1000, 'eval_ms': medians['eval'] * 1000,
          'logits_sum': float(forward(variables).sum())}


def main(argv):
  if len(argv) > 2 and argv[1] == '--child':
    print(json.dumps(measure(argv[2])))
    return
  arch = argv[1] if len(argv) > 1 else 'resnet56'
  rounds = int(argv[2]) if len(argv) > 2 else 2
  print(f'{arch}, batch 128, medians of 7 per process, ms', flush=True)
  for r in range(rounds):
    for name, flags in SETTINGS.items():
      env = dict(os.environ, XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} {flags}'.strip())
      out = subprocess.run([sys.executable, '-m', 'experiments.probes.xla_flags', '--child',
                            arch], env=env, capture_output=True, text=True, check=True)
      row = json.loads(out.stdout.strip().splitlines()[-1])
      print(f'round {r + 1} {name:14s} gradient {row["gradient_ms"]:6.0f}  eval '
            f'{row["eval_ms"]:5.0f}  logits sum {row["logits_sum"]:.4f}', flush=True)


if __name__ == '__main__':
  main(sys.argv)
