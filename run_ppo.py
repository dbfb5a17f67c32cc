"""Train PPO on envpool. `python run_ppo.py` trains on Pong; `python run_ppo.py --env HalfCheetah-v4` on MuJoCo.

Writes config.json, progress.csv, TensorBoard events and orbax checkpoints to the run directory;
`python run_ppo.py --resume RUN_DIR` continues a stopped run from its last checkpoint. The same as
`python -m harness ppo`.
"""
import sys

from harness import loop


def main(argv: list[str] | None = None) -> int:
  return loop.main("ppo", argv)


if __name__ == "__main__":
  sys.exit(main())
