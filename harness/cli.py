"""Command-line parsing with one-line usage errors.

Every error a user can cause ends as `error: <what to change>` on stderr and exit code 2, with no traceback.
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import Callable, NoReturn, TypeVar

import tyro

T = TypeVar("T")


class UsageError(Exception):
  """An error the user can fix by changing a flag, an env id, a path or a checkpoint."""


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
  message = re.sub(r"^Error parsing \w+: ", "", " ".join(body))
  return message or "invalid arguments (see --help)"


def parse(config_cls: type[T], argv: list[str] | None, description: str) -> T:
  """Parses argv into `config_cls`; `--help` prints every field's docstring. Bad flags exit 2 with one line."""
  from algorithms.config import ConfigError
  args = sys.argv[1:] if argv is None else argv
  if any(a in ("-h", "--help") for a in args):
    return tyro.cli(config_cls, args=args, description=description)
  buf = io.StringIO()
  try:
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
      return tyro.cli(config_cls, args=args, description=description)
  except ConfigError as e:
    fail(str(e))
  except SystemExit as e:
    if e.code in (0, None):
      raise
    fail(_one_line(buf.getvalue()))


def main_guard(main: Callable[..., int | None]) -> Callable[..., int | None]:
  """Turns UsageError and ConfigError raised anywhere in `main` into one line and exit 2."""
  from algorithms.config import ConfigError

  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except (UsageError, ConfigError) as e:
      fail(str(e))
  return wrapped
