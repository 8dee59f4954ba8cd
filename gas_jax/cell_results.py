"""One source of truth per cell of an experiment grid, read strictly.

A cell's result may live in two places: its run folder (config.json, summary.json,
metrics.jsonl, written by `python -m gas_jax.main`) and its packed file (`report.packed_path`,
one JSON holding the same, written by `launch/campaign.py`). `resolve` looks at both and says
which one counts, so that a table never mixes, drops or double-counts a cell:

- only a result whose config is the cell's config (`workdir.differences`) and which finished at
  the cell's T counts; a smaller-T summary never stands for a larger T;
- a run folder and a packed file that both match: their summaries and rows must be equal, else
  `resolve` raises ResultsFileError, one line naming both files: the launchers stop;
- when only one of them matches, it wins; the other is named in a warning;
- an unreadable results file (truncated, not JSON, a git merge conflict, a JSON list, a packed
  file without its `summary`) raises `ResultsFileError`, one line naming the file: the launchers
  refuse to go on when the file belongs to a cell they need, and skip it with a warning when it
  does not (`read_json`).
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from gas_jax import report
from gas_jax import workdir as workdir_lib
from gas_jax.errors import ConfigError, RunError

Result = Tuple[Dict, List[Dict]]    # (summary, metrics rows)


class ResultsFileError(RunError):
  """A results file (summary.json, metrics.jsonl, a packed cell) that cannot be read as one."""


def _reason(text: str, e: Exception) -> str:
  if "<<<<<<<" in text or ">>>>>>>" in text:
    return "it holds a git merge conflict"
  if not text.strip():
    return "it is empty"
  if isinstance(e, json.JSONDecodeError):
    return f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}; truncated?)"
  return str(e)


def read_json(path: str, what: str, lines: bool = False):
  """The JSON value (or, with `lines`, the list of one object per line) in `path`; raises
  ResultsFileError naming the file and why it is unreadable."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
    text = raw.decode("utf-8")
  except OSError as e:
    raise ResultsFileError(f"{path}: unreadable {what} ({e.strerror})") from None
  except UnicodeDecodeError as e:
    raise ResultsFileError(f"{path}: unreadable {what} (not UTF-8 text: byte "
                           f"{raw[e.start]:#04x} at offset {e.start})") from None
  try:
    if lines:
      return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    return json.loads(text)
  except ValueError as e:
    raise ResultsFileError(f"{path}: unreadable {what} ({_reason(text, e)})") from None


def _need(path: str, what: str, value, key: str, kind) -> None:
  if not isinstance(value, dict) or not isinstance(value.get(key), kind):
    got = type(value).__name__ if not isinstance(value, dict) else (
        "no " + repr(key) if key not in value else f"{key!r} of type {type(value[key]).__name__}")
    raise ResultsFileError(f"{path}: unreadable {what} (expected a JSON object with {key!r}; "
                           f"found {got})")


def _check_summary(path: str, what: str, summary) -> None:
  _need(path, what, summary, "global_iterations", int)
  _need(path, what, summary, "final_accuracy", (int, float))


def read_packed_file(path: str) -> Dict:
  """A packed cell (`pack_run`), checked: format, config, summary and metrics rows."""
  what = "packed cell"
  packed = read_json(path, what)
  _need(path, what, packed, "format", str)
  if packed["format"] != report.PACKED_FORMAT:
    raise ResultsFileError(f"{path}: not a packed cell (format {packed['format']!r}, expected "
                           f"{report.PACKED_FORMAT!r})")
  _need(path, what, packed, "config", dict)
  _need(path, what, packed, "summary", dict)
  _check_summary(path, what, packed["summary"])
  if not isinstance(packed.get("metrics"), list) or not all(
      isinstance(r, dict) for r in packed["metrics"]):
    raise ResultsFileError(f"{path}: unreadable {what} (its 'metrics' is not a list of rows)")
  return packed


def read_run_result(workdir: str) -> Result:
  """(summary, rows) of a finished run folder, checked (ResultsFileError naming the file)."""
  path = os.path.join(workdir, "summary.json")
  summary = read_json(path, "summary")
  _check_summary(path, "summary", summary)
  rows_path = os.path.join(workdir, "metrics.jsonl")
  rows = read_json(rows_path, "metrics file", lines=True) if os.path.exists(rows_path) else []
  if not all(isinstance(r, dict) for r in rows):
    raise ResultsFileError(f"{rows_path}: unreadable metrics file (a line is not an object)")
  return summary, rows


def pack_run(workdir: str, **extra) -> Dict:
  """One finished run as one small JSON-able dict, read strictly: its config.json, summary.json
  and metrics.jsonl rows (no checkpoints), plus `extra` (e.g. the cell's wall time)."""
  config = read_json(os.path.join(workdir, "config.json"), "config")
  summary, rows = read_run_result(workdir)
  return dict(format=report.PACKED_FORMAT, config=config, summary=summary, metrics=rows, **extra)


@dataclasses.dataclass
class Resolved:
  """What counts for one cell: state 'done' (with `result` read from `source`), 'todo' (its
  run folder is empty or holds an unfinished run of this config: run or resume it) or
  'refused' (`why`: its files hold another run or disagree); `notes`: warnings to log."""
  state: str
  result: Optional[Result] = None
  source: Optional[str] = None
  why: str = ""
  notes: List[str] = dataclasses.field(default_factory=list)


def _folder(wd: str, config) -> Tuple[str, str]:
  """('done' | 'todo' | 'other', why) of a run folder for `config`."""
  stored = workdir_lib.read_stored_config(wd) if os.path.isdir(wd) else None
  if stored is not None:
    diff = workdir_lib.differences(stored, config.to_dict(),
                                   workdir_lib.done_iterations(wd))
    if diff:
      return "other", f"holds a run with another config ({'; '.join(diff[:4])})"
  summary_path = os.path.join(wd, "summary.json")
  if stored is None or not os.path.exists(summary_path):
    return "todo", ""
  summary = read_json(summary_path, "summary")
  _check_summary(summary_path, "summary", summary)
  if summary["global_iterations"] == config.num_global_iters:
    return "done", ""
  return "todo", ""    # a run of this config that stopped early, or a smaller T: resumes


def _packed(path: str, config) -> Tuple[str, str, Optional[Dict]]:
  """('done' | 'missing' | 'other', why, packed) of a packed file for `config`."""
  if not os.path.exists(path):
    return "missing", "", None
  packed = read_packed_file(path)
  done = packed["summary"]["global_iterations"]
  diff = workdir_lib.differences(packed["config"], config.to_dict(), done)
  if diff:
    return "other", f"holds a run with another config ({'; '.join(diff[:4])})", packed
  if done != config.num_global_iters:
    return "other", (f"holds this config finished at T={done}, not at "
                     f"num_global_iters={config.num_global_iters}"), packed
  return "done", "", packed


def resolve(workdir: str, config, packed_file: Optional[str] = None) -> Resolved:
  """The one result that counts for the cell with run folder `workdir` and packed file
  `packed_file` (None: the cell has none); see the module docstring for the rules."""
  ppath = packed_file
  folder, fwhy = _folder(workdir, config)
  packed, pwhy, pk = _packed(ppath, config) if ppath else ("missing", "", None)
  notes = []
  if folder == "done" and packed == "done":
    run = read_run_result(workdir)
    if run != (pk["summary"], pk["metrics"]):
      key = "final_accuracy"
      raise ResultsFileError((
          f"{os.path.join(workdir, 'summary.json')} and {ppath} both hold this cell finished "
          f"but disagree ({key} {run[0].get(key)!r} vs {pk['summary'].get(key)!r}): keep one, "
          "move the other away"))
    return Resolved("done", run, ppath)       # (the same: the packed file is the deliverable)
  if packed == "done":
    if folder == "other":
      notes.append(f"{workdir} {fwhy}: ignored, {ppath} holds this cell")
    elif os.path.exists(os.path.join(workdir, "summary.json")):
      notes.append(f"{workdir} holds an unfinished or shorter run of this cell: ignored, "
                   f"{ppath} holds it finished")
    return Resolved("done", (pk["summary"], pk["metrics"]), ppath, notes=notes)
  if packed == "other" and folder == "todo":
    return Resolved("refused", why=f"{ppath} {pwhy} (never overwritten)")
  if packed == "other" and folder == "done":
    notes.append(f"{ppath} {pwhy}: ignored, {workdir} holds this cell")
  if folder == "done":
    return Resolved("done", read_run_result(workdir), os.path.join(workdir, "summary.json"),
                    notes=notes)
  if folder == "other":
    return Resolved("refused", why=f"{workdir} {fwhy}", notes=notes)
  return Resolved("todo", notes=notes)


def unique(values: Sequence, flag: str) -> List:
  """`values` as given, or ConfigError (one line) naming `flag` if one appears twice: seeds,
  methods, partitions and cells are sets, and a repeated one would count twice."""
  seen, twice = set(), []
  for v in values:
    if v in seen and v not in twice:
      twice.append(v)
    seen.add(v)
  if twice:
    raise ConfigError(f"{flag}={','.join(map(str, values))} names "
                      f"{', '.join(map(str, twice))} more than once: each may appear once "
                      "(a repeated one would be run and counted twice)")
  if not values:
    raise ConfigError(f"{flag} is empty: give at least one")
  return list(values)


def load_counted(root: str) -> Dict[Tuple[str, str, int], Result]:
  """The cells that counted in ROOT's last report (ROOT/cells.json, `report.write_report`),
  each read strictly from its source; {} if ROOT has no report."""
  path = os.path.join(root, report.COUNTED_FILE)
  if not os.path.exists(path):
    return {}
  listed = read_json(path, "list of counted cells")
  _need(path, "list of counted cells", listed, "cells", list)
  out = {}
  for c in listed["cells"]:
    src = os.path.join(root, c["source"])
    if src.endswith(".json") and os.path.basename(src) != "summary.json":
      packed = read_packed_file(src)
      out[c["partition"], c["method"], int(c["seed"])] = (packed["summary"], packed["metrics"])
    else:
      out[c["partition"], c["method"], int(c["seed"])] = read_run_result(os.path.dirname(src))
  return out
