"""Checkpoints of a run: the one module that talks to Orbax.

`Checkpointer(workdir, ...)` wraps `orbax.checkpoint.CheckpointManager` over
`workdir/checkpoints/<step>/` with two items per step:
  'state': the train state as a pytree (params, batch stats, optimizer state, method state,
           step and the loop key's raw data), saved asynchronously (`StandardSave`);
  'meta':  JSON (`JsonSave`): the step, training seconds so far, and the config fields a
           resumed run must share (model, method name, dataset).
The data position is the step (`TrainBatches` depends only on (seed, step)), so the state
above is everything a run needs to continue identically.

Restore goes against an abstract target carrying the shardings of the running job, newest
step first; a step that fails to restore (truncated or corrupted files) is skipped with a
warning. A later Orbax migration touches this file only.
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import re
import sys

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from gkt_jax import utils

STATE = 'state'
META = 'meta'
# Config fields that must match for a resume (fields of other kinds may change, e.g. a longer
# schedule or a new eval frequency).
RESUME_MUST_MATCH = ('model', 'method.name', 'data.name',
                     'data.options.train_examples_per_class')


# Config fields a resumed run may change: its length, cadence, evaluation, outputs and where
# its files are (dotted names; a section's name covers its fields). Any other change is refused
# unless `config.allow_resume_changes` names the field; every change is recorded.
RESUME_MAY_CHANGE = (
    'total_steps', 'total_epochs', 'log_every_steps', 'log_every_epochs', 'eval_every_steps',
    'eval_every_epochs', 'ckpt_every_steps', 'ckpt_every_epochs', 'evals', 'plots', 'verbose',
    'checkpoints', 'max_checkpoints', 'resume', 'init', 'train_accuracy_examples',
    'allow_resume_changes', 'data.dir', 'data.eval_batch_size', 'data.options.cache',
    'data.options.num_threads', 'data.options.test_examples', 'data.options.test_split')


def plain_config(config) -> dict:
  """A config (ConfigDict or dict) as the JSON-plain dict checkpoints keep."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(_flat(value, name + '.'))
    else:
      out[name] = value
  return out


def config_changes(saved: dict, config) -> tuple[list[dict], list[str]]:
  """The fields `config` changes against the config a checkpoint was saved with.

  Returns (changes, refused): changes are {'field', 'saved', 'now'} for every differing
  dotted field; refused names those neither in RESUME_MAY_CHANGE nor in
  `config.allow_resume_changes` (comma-separated dotted names).
  """
  now = plain_config(config)
  allowed = RESUME_MAY_CHANGE + tuple(
      f.strip() for f in str(now.get('allow_resume_changes') or '').split(',') if f.strip())
  before, after = _flat(saved), _flat(now)
  changes, refused = [], []
  for field in sorted((set(before) | set(after)) - {'allow_resume_changes'}):
    if before.get(field) != after.get(field):
      changes.append({'field': field, 'saved': before.get(field), 'now': after.get(field)})
      if not any(field == a or field.startswith(a + '.') for a in allowed):
        refused.append(field)
  return changes, refused


class ResumeMismatchError(ValueError):
  """The checkpoint was written by a run with a different model, method or dataset."""


class UnreadableCheckpointsError(RuntimeError):
  """Checkpoints exist, but none of them can be restored."""


def _get_field(config, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value.get(part) if hasattr(value, 'get') else None
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  return _plain(value)


def _plain(value):
  """JSON round-trip form (tuples become lists), so saved and live values compare equal."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in sorted(value.items())}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def identity_fields(config) -> dict:
  """{dotted field: value} of the fields in RESUME_MUST_MATCH."""
  return {name: _get_field(config, name) for name in RESUME_MUST_MATCH}


def state_to_tree(state) -> dict:
  """The TrainState as a checkpointable dict (the typed key as its raw uint32 data)."""
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'method_state': state.method_state,
          'key_data': jax.random.key_data(state.key)}


def tree_to_state(tree: dict, like):
  """Inverse of `state_to_tree`, with `like` (a TrainState) giving the key's type."""
  return like.replace(step=tree['step'], params=tree['params'],
                      batch_stats=tree['batch_stats'], opt_state=tree['opt_state'],
                      method_state=tree['method_state'],
                      key=jax.random.wrap_key_data(tree['key_data'],
                                                   impl=jax.random.key_impl(like.key)))


def abstract_tree(tree):
  """ShapeDtypeStructs carrying each leaf's sharding: the restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


@contextlib.contextmanager
def _without_absl_warning(prefix: str):
  """Drops absl log records whose message starts with `prefix` inside the block."""
  def keep(record: std_logging.LogRecord) -> bool:
    return not record.getMessage().startswith(prefix)

  absl_logger = std_logging.getLogger('absl')
  absl_logger.addFilter(keep)
  try:
    yield
  finally:
    absl_logger.removeFilter(keep)


class Checkpointer:
  """Async Orbax checkpoints every `every_steps`, at most `max_to_keep` kept.

  Args:
    directory: where the step folders go (normally `workdir/checkpoints`).
    every_steps: save interval (0 or None: only forced saves, e.g. on preemption and at the end).
    max_to_keep: newest checkpoints kept (None: all).
    async_save: write in a background thread (the save call returns once arrays are on host).
  """

  def __init__(self, directory: str, *, every_steps: int | None = None,
               max_to_keep: int | None = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.every_steps = int(every_steps or 0)
    self.read_only = read_only
    # A read-only manager saves and deletes nothing: said here, so that Orbax does not warn
    # that it sets them. Handlers for both items, so that restoring one of them (the meta
    # first) does not warn that the other "could not be restored".
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep, create=not read_only,
        read_only=read_only, save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    with _without_absl_warning('Given directory is read only'):
      self._manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={STATE: ocp.StandardCheckpointHandler(),
                         META: ocp.JsonCheckpointHandler()})
    self._quieted = None  # (previous unraisablehook, asyncio log filter) while restoring
    self._failed_reads = False

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return bool(self.every_steps) and step % self.every_steps == 0

  def save(self, step: int, state, meta: dict) -> None:
    """Starts an (async) save of `state` (a TrainState) and the JSON `meta` at `step`.

    meta also records the state's tree signature (every leaf's path, shape and dtype), so
    a resume with a differently shaped state is named as such, not taken for corruption.
    """
    tree = state_to_tree(state)
    self._manager.save(int(step), args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(tree),
        META: ocp.args.JsonSave(dict(meta, step=int(step), signature=tree_signature(tree)))}),
        force=True)

  def restore(self, like, *, config=None, step: int | None = None):
    """Restores the newest readable checkpoint (or `step`) into a TrainState like `like`.

    Returns (state, meta), or (None, None) when there is no checkpoint. Steps that fail to
    restore are skipped (newest first) with a warning. With `config`, raises
    ResumeMismatchError when the checkpoint's model/method/dataset differ from it.
    """
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      return None, None
    self._quiet_failed_reads()
    live_tree = state_to_tree(like)
    target = abstract_tree(live_tree)
    errors = []
    for candidate in steps:
      meta, restored, error = None, None, None
      try:
        meta = self._manager.restore(candidate, args=ocp.args.Composite(
            **{META: ocp.args.JsonRestore()}))[META]
      except Exception as e:  # pylint: disable=broad-except
        error = _describe(candidate, e)
        self._failed_reads = True
      if meta is not None:
        source = f'{self.directory}/{candidate}'
        if meta.get('weights_only'):
          raise ResumeMismatchError(
              f'{source} holds weights only (an exported model), not a train state to '
              'resume: load it with config.init')
        if config is not None:
          check_identity(meta, config, source)
        check_signature(meta, live_tree, source)
        try:
          restored = self._manager.restore(candidate, args=ocp.args.Composite(
              **{STATE: ocp.args.StandardRestore(target)}))[STATE]
        except Exception as e:  # pylint: disable=broad-except
          error = _describe(candidate, e)
          self._failed_reads = True
      # Every process must take the same step (or all skip it), else they would diverge.
      if not utils.all_processes(error is None):
        errors.append(error or f'step {candidate}: unreadable in another process')
        continue
      unreadable = [s for s in steps if s > candidate]
      self._set_aside(unreadable)
      if errors:
        self._warn_unreadable(unreadable, errors, f'resuming from step {candidate}',
                              set_aside=not self.read_only)
      return tree_to_state(restored, like), meta
    raise UnreadableCheckpointsError(
        f'no checkpoint in {self.directory} is readable (steps '
        f'{", ".join(str(s) for s in steps)}; {errors[0]}): move that directory aside and run '
        'again to train from scratch, or restore a readable copy of it')

  def _warn_unreadable(self, steps, errors, outcome: str, set_aside: bool = False) -> None:
    """One line: which steps were unreadable (the first error), what happened to them."""
    names = ', '.join(str(s) for s in steps)
    aside = (f'; set aside as {", ".join(f"corrupt-{s}" for s in steps)}' if set_aside
             else '')
    logging.warning('checkpoint step%s %s in %s unreadable (%s)%s; %s',
                    's' if len(steps) > 1 else '', names, self.directory, errors[0], aside,
                    outcome)

  def _quiet_failed_reads(self) -> None:
    """A failed restore leaves TensorStore reads in flight: they complete into Orbax's
    closed event loop ('Event loop is closed' tracebacks) or as never-retrieved task
    errors, thousands of lines for a ResNet-50 around the one useful warning. From the
    first restore until `close()`, those two kinds of report alone are dropped."""
    if self._quieted is not None:
      return
    previous_hook = sys.unraisablehook

    def hook(unraisable):
      exc = unraisable.exc_value
      if not (isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'):
        previous_hook(unraisable)

    def keep(record: std_logging.LogRecord) -> bool:
      message = record.getMessage()
      return not (message.startswith('Task exception was never retrieved')
                  and 'orbax' in message)

    sys.unraisablehook = hook
    std_logging.getLogger('asyncio').addFilter(keep)
    self._quieted = (previous_hook, keep)

  def _unquiet(self) -> None:
    if self._quieted is not None:
      previous_hook, keep = self._quieted
      sys.unraisablehook = previous_hook
      std_logging.getLogger('asyncio').removeFilter(keep)
      self._quieted = None

  def _set_aside(self, steps) -> None:
    """Renames unreadable step folders to `corrupt-<step>` so the resumed run can save
    those steps again; the files stay for inspection."""
    if not steps or self.read_only:
      return
    if jax.process_index() == 0:
      for step in steps:
        path = os.path.join(self.directory, str(step))
        aside = os.path.join(self.directory, f'corrupt-{step}')
        suffix = 1
        while os.path.exists(aside):
          aside = os.path.join(self.directory, f'corrupt-{step}.{suffix}')
          suffix += 1
        if os.path.isdir(path):
          os.replace(path, aside)
    if jax.process_count() > 1:
      utils.multihost_utils().sync_global_devices('gkt_jax_checkpoint_set_aside')
    self._manager.reload()

  def restore_raw(self, step: int) -> dict:
    """The state tree saved at `step` as host numpy arrays (no target needed)."""
    metadata = self._manager.item_metadata(step)[STATE]
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata)
    return self._manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(target)}))[STATE]

  def restore_weights(self, like_params, like_batch_stats, adapt=None):
    """(params, batch stats, step, notes) of the newest readable checkpoint, for `config.init`.

    `adapt(params, batch_stats, like_params, like_batch_stats) -> (params, batch_stats,
    notes)` may complete the loaded weights to the live model first (a method's
    `adapt_init_weights`); the result must then match `like_*` leaf for leaf.
    """
    errors = []
    self._quiet_failed_reads()
    for candidate in self.all_steps()[::-1]:
      try:
        tree = self.restore_raw(candidate)
      except Exception as e:  # pylint: disable=broad-except
        errors.append(_describe(candidate, e))
        self._failed_reads = True
        continue
      if errors:
        self._warn_unreadable(self.all_steps()[::-1][:len(errors)], errors,
                              f'loading step {candidate}')
      params, batch_stats, notes = tree['params'], tree.get('batch_stats', {}), []
      if adapt is not None:
        params, batch_stats, notes = adapt(params, batch_stats, like_params, like_batch_stats)
      params, batch_stats = fit_variables(params, batch_stats, like_params, like_batch_stats,
                                          f'config.init={self.directory}')
      return params, batch_stats, candidate, notes
    raise FileNotFoundError(f'no readable checkpoint in {self.directory}'
                            + (': ' + '; '.join(errors) if errors else ''))

  def save_weights(self, step: int, params, batch_stats, meta: dict) -> None:
    """Saves params and batch statistics alone (a deployable model, e.g. an exported main
    path): `restore_weights` and `config.init` read it; a full-state `restore` refuses it."""
    tree = {'params': params, 'batch_stats': batch_stats}
    self._manager.save(int(step), args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(tree),
        META: ocp.args.JsonSave(dict(meta, step=int(step), weights_only=True,
                                     signature=tree_signature(tree)))}),
        force=True)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    if not self._failed_reads:  # their reads may still complete into the closed loop
      self._unquiet()


def fit_weights(loaded, like, what: str, source: str):
  """`loaded` arranged as `like` (same structure and shapes), cast to like's dtypes.

  `what` ('params', 'batch_stats') and `source` (where `loaded` came from) name a mismatch.
  """
  loaded_flat = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  like_flat, _ = jax.tree_util.tree_flatten_with_path(like)
  out = []
  for path, leaf in like_flat:
    if path not in loaded_flat:
      raise ValueError(f'{source}: {what} has no {jax.tree_util.keystr(path)}; '
                       'the checkpoint was written for a different architecture')
    value = np.asarray(loaded_flat[path])
    if value.shape != leaf.shape:
      raise ValueError(f'{source}: {what}{jax.tree_util.keystr(path)} has shape '
                       f'{value.shape}, the model needs {leaf.shape}')
    out.append(value.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(jax.tree.structure(like), out)


def fit_variables(params, batch_stats, like_params, like_batch_stats, source: str):
  """(params, batch_stats) read from `source`, fitted to the live model's (`fit_weights`)."""
  return (fit_weights(params, like_params, 'params', source),
          fit_weights(batch_stats, like_batch_stats, 'batch_stats', source))


# ' [tensorstore_spec=...]', ' [source locations=...]' to the end of the line.
_SPEC = re.compile(r'\s*\[(?:[A-Za-z_]+(?: [A-Za-z_]+)*=|[\'"{]).*$')
_OBJECT_REPR = re.compile(r'\s*<(?:bound method|function|built-in|pybind11)[^>]*>?')
_CHAIN_LINK = re.compile(r'(?<=["\w\])]): (?=[A-Z])')  # "...: Error reading ...: Cause"
_STATUS = re.compile(r'^([A-Z][A-Z_]+): ')


def _describe(step: int, error: Exception, limit: int = 240) -> str:
  """'step N: Type: cause', short enough for one log line.

  TensorStore's errors are one line of 2,000 characters: a status, a chain of "Error
  opening/reading ...: " links and bracketed annotations (its JSON spec, source locations).
  The status and the last link (the cause, e.g. "Requested byte range [0, 7859) is not valid
  for value of size 0") are kept; object reprs such as `<bound method pybind11_...>` are
  dropped. A cut message ends in '...'.
  """
  text = (str(error).splitlines() or [''])[0]
  text = _OBJECT_REPR.sub('', _SPEC.sub('', text)).strip().rstrip(':')
  status = _STATUS.match(text)
  if status:
    text = f'{status.group(1)}: {_CHAIN_LINK.split(text[status.end():])[-1]}'
  if len(text) > limit:
    text = text[:limit].rsplit(' ', 1)[0] + ' ...'
  return f'step {step}: {type(error).__name__}: {text}'




def tree_signature(tree) -> list[str]:
  """'path shape dtype' of every leaf, in order."""
  return [f'{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype}'
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_signature(meta: dict, live_tree, source: str) -> None:
  """Raises ResumeMismatchError when the saved state's leaves differ from the live state's."""
  saved = meta.get('signature')
  if saved is None:
    return
  live = tree_signature(live_tree)
  if saved != live:
    first = next((f'saved {a!r} vs now {b!r}' for a, b in zip(saved, live) if a != b),
                 f'{len(saved)} saved leaves vs {len(live)} now')
    raise ResumeMismatchError(
        f'the train state in {source} has another structure ({first}): the model, method or '
        'optimizer config changed since it was saved; resume with the same config or use a '
        'new workdir (config.init loads weights only)')


def check_identity(meta: dict, config, source: str) -> None:
  saved = meta.get('identity', {})
  live = identity_fields(config)
  for name, value in live.items():
    if name in saved and saved[name] != value:
      raise ResumeMismatchError(
          f'config.{name}={value!r} differs from the checkpoint in {source} '
          f'({saved[name]!r}); resume with the same {name}, or use a new workdir '
          '(config.init loads weights only)')


def find_checkpoint_dir(path: str) -> str:
  """`path` itself if it holds step folders, else `path/checkpoints`."""
  candidate = os.path.join(path, 'checkpoints')
  return candidate if os.path.isdir(candidate) else path


@contextlib.contextmanager
def read_only(path: str):
  """A read-only `Checkpointer` of `path` (a workdir or its checkpoints folder:
  `find_checkpoint_dir`), closed when the block is left."""
  source = Checkpointer(find_checkpoint_dir(path), read_only=True)
  try:
    yield source
  finally:
    source.close()
