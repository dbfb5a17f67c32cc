"""Train IMPALA (V-trace) on envpool: actor threads (or Ray actors) feed a learner through a bounded queue.

`python run_impala.py` trains on Pong; `python run_impala.py --env CartPole-v1` on a cheap check. Same run
directory, logs, checkpoints and `--resume RUN_DIR` as run_ppo.py. The same as `python -m harness impala`.
"""
import sys

from harness import loop


def main(argv: list[str] | None = None) -> int:
  return loop.main("impala", argv)


if __name__ == "__main__":
  sys.exit(main())
