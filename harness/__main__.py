"""`python -m harness ALGORITHM [flags]`: train any registered algorithm (`python -m harness a2c --help`)."""
import sys

from algorithms import registry
from harness.cli import fail
from harness.loop import main

if __name__ == "__main__":
  if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    fail(f"usage: python -m harness ALGORITHM [flags]; algorithms: {', '.join(registry.names())}")
  if sys.argv[1] not in registry.names():
    fail(f"unknown algorithm '{sys.argv[1]}'; algorithms: {', '.join(registry.names())}")
  sys.exit(main(sys.argv[1], sys.argv[2:]))
