"""What every config checks at construction: the error a user fixes by changing a flag, and the checks that raise it.

Algorithm configs (hyperparameters) and the harness's run settings both use these; fields left `None` take the env
family's default when a config is resolved against an env (`resolve`), so `config.json` records concrete values.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any


class UsageError(ValueError):
  """The one error type for what a user can fix: a flag value or combination, an env id, a path, a checkpoint. The
  message names what to change; the entry points print it as one line and exit 2."""


def flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def _non_finite(value: Any) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
          and not math.isfinite(value))


def check_finite(config: Any) -> None:
  """Refuses NaN and +-inf in every float field, nested config dataclasses included (flags are flat, so the message
  names the field's own flag). A NaN learning rate would otherwise train until the first update's loss turns NaN,
  and NaN passes every `<` and `==` check below."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      check_finite(value)
    elif _non_finite(value):
      raise UsageError(f"{flag(field.name)} must be a finite number, got {value}")


def fill_defaults(config: Any, defaults: dict) -> Any:
  """`config` with each field that is None set from `defaults` (an env family's table), the others kept."""
  return dataclasses.replace(config, **{k: v for k, v in defaults.items() if getattr(config, k) is None})


def check_positive(config: Any, *names: str, allow_zero: tuple[str, ...] = ()) -> None:
  for name in names:
    value = getattr(config, name)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if _non_finite(value):
      raise UsageError(f"{flag(name)} must be a finite number, got {value}")
    if value < 0 or (value == 0 and name not in allow_zero):
      kind = "non-negative" if name in allow_zero else "positive"
      raise UsageError(f"{flag(name)} must be {kind}, got {value}")


def check_range(config: Any, name: str, low: float, high: float) -> None:
  value = getattr(config, name)
  if value is None:
    return
  if _non_finite(value):
    raise UsageError(f"{flag(name)} must be a finite number, got {value}")
  if not low <= value <= high:
    raise UsageError(f"{flag(name)} must lie in [{low}, {high}], got {value}")
