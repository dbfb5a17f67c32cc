"""Several processes (hosts) training one agent with `jax.distributed`.

Every process steps its share of the envs (`--num-envs` and `--num-actors` count the whole group) on its own CPUs
and holds its share of the learner devices; the update is one `shard_map` over all processes' devices, so gradients
and every statistic are reduced over the whole group (`algorithms.parallel`). Process 0 alone writes logs and
checkpoints; on `--resume` it reads the checkpoint and broadcasts it to the others.

A process that dies makes the next collective of the others fail (gloo: connection closed by peer); they then stop
with one line naming the cause. A process that hangs is declared dead by the coordination service after
`--heartbeat-timeout` seconds, and JAX ends the others.
"""
from __future__ import annotations

import os
import sys

import jax
from jax.experimental import multihost_utils

from algorithms import normalize
from harness.cli import UsageError, first_line

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
# A process's index among the group's processes on its own machine, as launchers set it (SLURM, torchrun, Open MPI).
LOCAL_RANK_VARS = ("SLURM_LOCALID", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def local_rank(address: str | None, process_id: int | None) -> int | None:
  """This process's index among the group's processes on this machine: the launcher's, or the process id when
  the coordinator is on loopback (then every process runs here); None when unknown (one process per machine)."""
  for name in LOCAL_RANK_VARS:
    if _env_int(name) is not None:
      return _env_int(name)
  host = (address or "").rpartition(":")[0].strip("[]")
  if process_id is not None and (host in ("localhost", "::1") or host.startswith("127.")):
    return process_id
  return None


def local_device_ids(rank: int | None, learner_devices: int) -> list[int] | None:
  """The accelerators process `rank` of this machine opens: its own `learner_devices` of them, so processes on
  one machine neither share GPU 0 nor each open (and allocate on) every GPU. None leaves JAX's choice: a process
  alone on its machine, or JAX_LOCAL_DEVICE_IDS set by the user."""
  if rank is None or os.environ.get("JAX_LOCAL_DEVICE_IDS"):
    return None
  return list(range(rank * learner_devices, (rank + 1) * learner_devices))


def initialize(config) -> None:  # config: harness.config.ScaleSettings
  """Joins the process group when asked for (flags, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
  or a SLURM job step with several tasks); a no-op otherwise. Call before any JAX computation.

  Processes that share a machine each open their own accelerators (`local_device_ids`); CPU runs are unaffected.
  """
  address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num = config.num_processes if config.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  pid = config.process_id if config.process_id is not None else _env_int("JAX_PROCESS_ID")
  slurm = all(v in os.environ for v in SLURM_VARS) and int(os.environ["SLURM_NTASKS"]) > 1
  if address is None and not slurm:
    if num is not None or pid is not None:
      raise UsageError("--num-processes / --process-id need --coordinator-address HOST:PORT (process 0's)")
    return
  if not slurm and (num is None or pid is None):
    raise UsageError("--coordinator-address needs --num-processes and --process-id (or JAX_NUM_PROCESSES and "
                     "JAX_PROCESS_ID)")
  if num is not None and pid is not None and not 0 <= pid < num:
    raise UsageError(f"--process-id {pid} must lie in [0, {num - 1}] for --num-processes {num}")
  try:
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid,
                               local_device_ids=local_device_ids(local_rank(address, pid), config.learner_devices),
                               heartbeat_timeout_seconds=int(config.heartbeat_timeout),
                               initialization_timeout=int(config.heartbeat_timeout) * 5)
  except Exception as e:  # noqa: BLE001  (jaxlib raises its own runtime errors)
    raise UsageError(f"could not join the process group at {address}: {first_line(e)}") from None


def group_size(config) -> int:  # config: harness.config.ScaleSettings
  """The processes the group will have, read before `initialize` from what it reads (flags, JAX_NUM_PROCESSES, a
  SLURM job step's tasks); 1 without a group."""
  num = config.num_processes if config.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  if num is None and all(v in os.environ for v in SLURM_VARS):
    num = int(os.environ["SLURM_NTASKS"])
  return num or 1


def is_main() -> bool:
  return jax.process_index() == 0


def check_split(flag: str, count: int, per_process: int = 1, what: str = "") -> None:
  """`flag`'s `count` must give every process the same multiple of `per_process` (`what` names that unit)."""
  P = jax.process_count()
  if P > 1 and count % (P * per_process):
    unit = f" x {what} {per_process}" if per_process > 1 else ""
    raise UsageError(f"{flag} {count} does not split over {P} processes{unit}")


def merge_stats(base, local):
  """Observation statistics after every process's rollout: each started from `base` and took in its own envs'
  observations (`normalize.merge`); the same result on every process."""
  gathered = multihost_utils.process_allgather(jax.device_get(local))
  return normalize.merge(base, [jax.tree.map(lambda x: x[i], gathered) for i in range(jax.process_count())])


def lost(error: BaseException) -> bool:
  """Whether an error raised by a collective means that another process is gone."""
  text = str(error)
  return jax.process_count() > 1 and any(s in text for s in ("Gloo", "Connection closed by peer", "coordination",
                                                             "Connection reset", "DEADLINE_EXCEEDED"))


def stop_lost(error: BaseException, run) -> None:
  """Ends this process after another one died: the logs are closed, the last checkpoint stands."""
  run.close()
  print(f"error: process {jax.process_index()} lost another process of the group ({first_line(error)}); stopping. "
        f"The last checkpoint stands: restart every process with --resume {run.config.run.run_dir}", file=sys.stderr,
        flush=True)
  # NOTE: JAX's distributed client would abort this process at exit (its shutdown barrier cannot complete).
  os._exit(1)
