"""Command-line parsing with one-line usage errors.

Every error a user can cause ends as `error: <what to change>` on stderr and exit code 2, with no traceback; a bad
flag value reads as `error: --flag: expected an integer, got 'x'`, not as tyro's report of the types it tried. A full
disk ends the same way, with exit code 1 (`main_guard`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import io
import re
import sys
import types
import typing
from typing import Any, Callable, NoReturn, TypeVar

import tyro

from algorithms.config import UsageError  # noqa: F401  (the one error type for usage errors, re-exported)

T = TypeVar("T")


def first_line(error: BaseException, limit: int = 200) -> str:
  """An exception's first line of text (or its type's name), cut to `limit` characters, for one-line reports."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(2)


def _one_line(tyro_text: str) -> str:
  """Condenses tyro's error report to its message: boxed in Unicode on a terminal, or a title over a rule of dashes
  when written to a buffer (as `parse` does)."""
  rule = lambda line: set(line) <= set("─- ")  # noqa: E731
  lines = [re.sub(r"^\s*│\s?|\s?│\s*$", "", raw).strip() for raw in tyro_text.splitlines()]
  lines = [line for line in lines if line and not line.startswith(("╭", "╰"))]  # the box's edges and its title
  if len(lines) > 1 and rule(lines[1]):  # "Value error" over "-----"
    lines = lines[2:]
  body = []
  for line in lines:
    if rule(line) or line.startswith("For full helptext"):
      break
    body.append(line)
  message = re.sub(r"^Error parsing (?!--)[\w.-]+: ", "", " ".join(body))  # a UsageError from a group
  return message or "invalid arguments (see --help)"


def _fields(config_type) -> dict[str, Any]:
  """{field name: type hint} over the config and the config dataclasses nested in it. tyro's flags are flat here
  (field names are unique across a composed config's groups), so a flag's last dotted part names its field."""
  if typing.get_origin(config_type) is typing.Annotated:  # e.g. tyro.conf.OmitArgPrefixes[...]
    config_type = typing.get_args(config_type)[0]
  if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
    return {}
  try:
    hints = typing.get_type_hints(config_type)
  except Exception:  # an annotation that does not evaluate: describe the flag from tyro's text instead
    return {}
  out = {}
  for field in dataclasses.fields(config_type):
    hint = hints.get(field.name)
    out.update(_fields(hint) if isinstance(hint, type) and dataclasses.is_dataclass(hint) else {field.name: hint})
  return out


def _expected(hint) -> str | None:
  """What a flag of type `hint` takes, in words, or None for a type with no short description. `X | None` reads as
  X: None only asks for the default."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(options) != 1:
      return None
    hint = options[0]
  if typing.get_origin(hint) is typing.Literal:
    return "one of " + ", ".join(str(v) for v in typing.get_args(hint))
  if isinstance(hint, type) and issubclass(hint, enum.Enum):
    return "one of " + ", ".join(member.name for member in hint)
  return {bool: "True or False", int: "an integer", float: "a number"}.get(hint)


def _expected_from_text(detail: str) -> str | None:
  """What a flag takes, from tyro's words when its field's type could not be read."""
  choices = [c for c in re.findall(r"'([^']*)'", detail.partition("Expected one of")[2]) if c != "None"]
  if sorted(choices) == ["False", "True"]:
    return "True or False"
  if choices:
    return "one of " + ", ".join(choices)
  if re.search(r"\bINT\b|int\(\)", detail):
    return "an integer"
  if re.search(r"\bFLOAT\b|to float", detail):
    return "a number"
  return None


def _given(args: list[str], flag: str) -> str | None:
  """The value the command line gave `flag` (the last one, as tyro takes), from `--flag VALUE` or `--flag=VALUE`."""
  value = None
  for i, arg in enumerate(args):
    if arg == flag and i + 1 < len(args):
      value = args[i + 1]
    elif arg.startswith(flag + "="):
      value = arg[len(flag) + 1:]
  return value


def _describe(message: str, args: list[str], fields: dict[str, Any]) -> str:
  """Rewrites tyro's condensed message for a bad value, a missing value or an unknown argument as one plain line
  naming the flag and what it takes, e.g. "--total-timesteps: expected an integer, got 'lots'", in place of tyro's
  list of the types it tried."""
  name = lambda flag: flag[2:].rsplit(".", 1)[-1].replace("-", "_")  # noqa: E731
  m = (re.match(r"Error parsing (--[\w.-]+): (.*)", message)
       or re.match(r"invalid choice '.*' for argument '(--[\w.-]+)'\. (.*)", message)
       or re.match(r"Missing value for argument '(--[\w.-]+)'", message))
  if m:
    flag, detail = m.group(1), m.group(m.lastindex)
    expected = _expected(fields.get(name(flag))) or _expected_from_text(detail)
    if message.startswith("Missing value"):
      return f"{flag}: missing value" + (f" ({expected})" if expected else "")
    value = _given(args, flag)
    if expected is None:
      return f"{flag}: {detail}"
    return f"{flag}: expected {expected}" + (f", got {value!r}" if value is not None else "")
  m = re.match(r"Unrecognized options: (.*)", message)
  if m:
    token = m.group(1).split(", ")[0]
    at = args.index(token) if token in args else -1
    before = args[at - 1] if at > 0 else ""
    switch = re.sub(r"^--no-", "--", before)
    if token.startswith("-"):
      flags = [f"--{f.replace('_', '-')}" for f in fields]
      flags += [f"--no-{f.replace('_', '-')}" for f, hint in fields.items() if hint is bool]
      close = difflib.get_close_matches(token.split("=", 1)[0], flags, n=1)
      return f"unknown flag {token}" + (f" (did you mean {close[0]}?)" if close else " (see --help)")
    if before.startswith("--") and fields.get(name(switch)) is bool:
      return f"{switch} is a switch and takes no value, got {token!r}: use {switch} or --no-{switch[2:]}"
    return f"unexpected argument {token!r} (each flag takes one value; see --help)"
  return message


def parse(config_cls: type[T], argv: list[str] | None, description: str) -> T:
  """Parses argv into `config_cls`; `--help` prints every field's docstring. Bad flags exit 2 with one line."""
  from algorithms.config import check_finite
  args = sys.argv[1:] if argv is None else argv
  if any(a in ("-h", "--help") for a in args):
    return tyro.cli(config_cls, args=args, description=description)
  buf = io.StringIO()
  try:
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
      config = tyro.cli(config_cls, args=args, description=description)
    if dataclasses.is_dataclass(config):
      check_finite(config)  # every float flag of every group, whether or not its own checks look at it
    return config
  except UsageError as e:
    fail(str(e))
  except SystemExit as e:
    if e.code in (0, None):
      raise
    fail(_describe(_one_line(buf.getvalue()), list(args), _fields(config_cls)))


def main_guard(main: Callable[..., int | None]) -> Callable[..., int | None]:
  """Turns a UsageError raised anywhere in `main` into one line and exit 2; a full disk (DiskFullError,
  or an OSError with ENOSPC or EDQUOT from a write the harness does not wrap) into one line and exit 1."""

  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UsageError as e:
      fail(str(e))
    except Exception as e:
      from harness.checkpoint import DiskFullError, no_space  # here: harness.checkpoint imports this module
      if isinstance(e, DiskFullError):
        message = str(e)
      elif isinstance(e, OSError) and no_space(e):
        message = f"{no_space(e)} writing {e.filename or 'the run directory'}; free space and try again"
      else:
        raise
      print(f"error: {message}", file=sys.stderr)
      raise SystemExit(1) from None
  return wrapped
