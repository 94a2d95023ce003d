"""Command-line plumbing of `experiments.main` and the other entry points: one-line errors,
paired duration overrides, evaluator requests.

Every mistake on the command line ends in one line on stderr, `error: ...`, naming the value
and what is allowed, with exit status 2 (`fail`). Flag parsing goes through `parse_flags`,
which turns ml_collections' and absl's exceptions into such lines.
"""

from __future__ import annotations

import difflib
import glob
import importlib.util
import json
import os
import signal
import sys
import tempfile
from typing import Any, NoReturn

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from gkt_jax.config.evals import EVALUATORS

EXIT_USAGE = 2
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


def fail(message: str) -> NoReturn:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
  """`flags.FLAGS(argv)` for `app.run(..., flags_parser=parse_flags)`: a bad flag, config
  file, config argument or config field ends the program with one `error:` line."""
  try:
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
      flags.FLAGS['config'].value.keys()  # a file that failed to load raises only when used
    return remaining
  except Exception as e:  # pylint: disable=broad-except  (flags.Error, config file errors)
    fail(describe_flag_error(argv, e))


def describe_flag_error(argv: list[str], error: Exception) -> str:
  """One line saying which flag value is wrong and what is allowed."""
  spec = _flag_value(argv, 'config')
  if spec is not None:
    path, _, _ = spec.partition(':')
    if not os.path.isfile(path):
      return f'--config={spec}: no such file; {_config_files_hint()}'
    try:
      config = load_config_file(spec)
    except Exception as e:  # pylint: disable=broad-except
      return f'--config={spec}: {_last_line(e)}'
    for name, value in _overrides(argv):
      problem = missing_field(config, name)
      if problem:
        return f'--config.{name}={value}: {problem}'
  message = _last_line(error).removeprefix('FATAL Flags parsing error: ')
  if spec is None and 'Flag --config must have a value' in message:
    return f'--config is required (the run\'s config file); {_config_files_hint()}'

  if 'Unknown command line flag' in message:
    message += ' (--helpfull lists the flags; --print_config the config fields)'
  return message


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file given as 'path.py' or 'path.py:arg'."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_gkt_jax_config_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def missing_field(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """Why `config.<dotted>` does not exist (with the fields that do), or None if it does."""
  node, walked = config, []
  for part in dotted.split('.'):
    where = 'config' + ''.join(f'.{w}' for w in walked)
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      return f'{where} is a {type(node).__name__}, it has no fields'
    if part not in node:
      keys = sorted(node.keys())
      elsewhere = [p for p in _field_paths(config) if p.rsplit('.', 1)[-1] == part]
      close = difflib.get_close_matches(part, keys, n=1)
      hint = (f'; did you mean config.{elsewhere[0]}?' if elsewhere
              else f'; did you mean {close[0]!r}?' if close else '')
      return f'{where} has no field {part!r}{hint} Its fields: {", ".join(keys)}'
    node = node[part]
    walked.append(part)
  return None


def resolve_duration_pairs(config: ml_collections.ConfigDict, given: dict[str, Any]) -> None:
  """A `{prefix}_steps` or `{prefix}_epochs` given on the command line (`given`, ml_collections'
  override values, dotted names) replaces the other field of its pair in the same section,
  e.g. `--config.total_steps=30` on a config that sets total_epochs. Giving both is left to
  the config check (an error)."""
  for name in given:
    parent, _, field = name.rpartition('.')
    for mine, other in (('_steps', '_epochs'), ('_epochs', '_steps')):
      partner = field.removesuffix(mine) + other
      partner_name = f'{parent}.{partner}' if parent else partner
      if field.endswith(mine) and partner_name not in given:
        section = config
        for part in filter(None, parent.split('.')):
          section = section[part]
        if partner in section:
          with section.unlocked():
            section[partner] = None


def start(argv, config_holder, *, section: str, kind: str, other: str, print_config: bool,
          workdir: str | None):
  """The shared start of the entry points: no stray arguments, a config of the right kind
  (it has `section`; `other` is the module for the other kind), paired durations resolved,
  --print_config, the workdir checked, JAX's INFO logging off unless --verbosity is given.
  Returns the config, or None after printing it."""
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}: every setting is a flag (--config.<field>=...)')
  config = config_holder.value
  if section not in config:
    fail(f'--config={flags.FLAGS["config"].config_filename}: not a {kind} config (no {section} '
         f'section); the other kind runs with python -m {other}')
  resolve_duration_pairs(config, config_flags.get_override_values(flags.FLAGS['config']))
  if print_config:
    print(config)
    return None
  check_workdir(workdir)
  quiet_logging()
  return config


def quiet_logging(level: int = logging.WARNING) -> None:
  """absl logging at `level` unless --verbosity is given: JAX logs its backend probing
  (libtpu, proxy) and Orbax every save and restore at INFO; progress is printed anyway."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(level)


def exit_if_preempted(result: dict) -> None:
  """A run stopped by a signal saved its state but did not finish: exit 128 + the signal's
  number (a shell `&&` or a scheduler must know)."""
  if result.get('preempted'):
    sys.exit(128 + getattr(signal.Signals, result.get('signal') or 'SIGTERM').value)


def check_workdir(workdir: str | None) -> None:
  """The workdir exists or can be created, and is writable (found before any work; nothing
  is created here)."""
  if not workdir:
    fail('--workdir is required: the directory the run writes to (created when missing; '
         'running the same command again resumes from it)')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    fail(f'--workdir={workdir}: is a file, not a directory; give a directory (created when '
         'missing)')
  existing = os.path.abspath(workdir)  # the directory itself, or where it would be created
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:  # nothing is created: a rejected run leaves no trace
    if not os.path.isdir(existing):
      raise NotADirectoryError(f'{existing} is a file')
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    fail(f'--workdir={workdir}: cannot write there ({e.strerror or e}); give a writable '
         'directory')


def _flag_value(argv: list[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _overrides(argv: list[str]):
  """(dotted field, value) of every --config.<field> argument."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config.'):
      name, sep, value = arg.removeprefix('--config.').partition('=')
      if not sep:
        value = argv[i + 1] if i + 1 < len(argv) else ''
      yield name, value


def _field_paths(config, prefix: str = '') -> list[str]:
  paths = []
  for key in config.keys():
    path = f'{prefix}{key}'
    paths.append(path)
    if isinstance(config[key], (ml_collections.ConfigDict, dict)):
      paths += _field_paths(config[key], path + '.')
  return paths


def _config_files_hint() -> str:
  files = sorted(os.path.basename(p).removesuffix('.py')
                 for p in glob.glob(os.path.join(CONFIG_DIR, '*.py')))
  names = ','.join(f for f in files if f not in ('__init__', 'common'))
  return (f'config files: experiments/configs/{{{names}}}.py; a dataset\'s file takes '
          'method=NAME (e.g. experiments/configs/digits.py:method=gkt,smoke)')


def _last_line(error: Exception) -> str:
  """The last non-empty line of an error (config files' own errors end the traceback text
  that ml_collections puts in its message)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def requested_evals(names: list[str] | None, text: str | None) -> dict:
  """{name: evaluator config} of `--evals` (evaluator types, each at its defaults) or
  `--evals_json` (whole entries): exactly one of them."""
  if bool(names) == bool(text):
    raise app.UsageError('give exactly one of --evals (evaluator types) and --evals_json')
  if names:
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
      raise app.UsageError(f'--evals: {", ".join(map(repr, unknown))} is not one of '
                           f'{tuple(sorted(EVALUATORS))}')
    return {name: {'type': name} for name in names}
  try:
    evals = json.loads(text)
  except json.JSONDecodeError as e:
    raise app.UsageError(f'--evals_json is not JSON: {e}') from e
  if not isinstance(evals, dict) or not evals:
    raise app.UsageError(f'--evals_json={text!r}: must be a non-empty JSON object '
                         '{name: {"type": ..., ...}}')
  return evals
