"""A full disk while writing a checkpoint or a log: one line naming the run directory, the last complete checkpoint
and --resume (DiskFullError), the complete checkpoints intact, nothing half-written left behind.

The disk is real: a 1500 KiB tmpfs mounted for each test (root only; skipped elsewhere). A checkpoint of the PPO
CartPole state takes ~100 KiB there, so about a dozen fit.
"""
import errno
import os
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import networks
from algorithms import ppo
from harness.checkpoint import Checkpointer, DiskFullError
from harness.logger import PROGRESS, RunLogger

from conftest import read_csv

COLUMNS = ["global_step", "loss"]


@pytest.fixture
def disk(tmp_path):
  """A 1500 KiB tmpfs, unmounted afterwards."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  if os.geteuid() != 0:
    pytest.skip("mounting a tmpfs to fill needs root")
  try:
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount_point)],
                         capture_output=True, text=True)
  except FileNotFoundError:
    pytest.skip("no mount command here")
  if res.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
  yield mount_point
  if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
    subprocess.run(["umount", "-l", str(mount_point)], check=True)  # a file left open: detach it all the same


def fill(directory) -> str:
  """Writes a ballast file until the disk is full; returns its path (delete it to free the space)."""
  path = os.path.join(directory, "ballast")
  with open(path, "wb", buffering=0) as f:
    try:
      while True:
        f.write(b"\0" * 4096)
    except OSError as e:
      assert e.errno == errno.ENOSPC, e
  return path


@pytest.fixture(scope="module")
def state():
  """A real PPO CartPole-v1 training state (params, Adam moments, normalisers)."""
  config = ppo.PPOConfig().resolve("classic")
  network = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
  return ppo.init_state(config, network, (4,), jax.random.PRNGKey(0))


def message(run_dir, writing, last_step):
  return (f"no space left on device writing {writing} (last complete checkpoint: step {last_step}); free space and "
          f"continue with --resume {run_dir}")


def test_checkpoints_until_the_disk_is_full(disk, state):
  run_dir = str(disk / "run")
  checkpointer = Checkpointer(run_dir, keep=1000)
  saved = []
  with pytest.raises(DiskFullError) as exc:
    for step in range(512, 512 * 100, 512):
      checkpointer.save(step, state.replace(global_step=jnp.int32(step)), {"step": step})
      saved.append(step)
  assert len(saved) >= 5, saved  # the disk filled on a save, not at once
  assert str(exc.value) == message(run_dir, f"{run_dir}/checkpoints", saved[-1])
  assert sorted(os.listdir(checkpointer.directory)) == sorted(map(str, saved))  # the unfinished save removed
  assert checkpointer.steps() == saved
  restored, meta, step = checkpointer.restore(state)  # the same checkpointer still reads
  assert (step, meta, int(restored.global_step)) == (saved[-1], {"step": saved[-1]}, saved[-1])
  checkpointer.close()
  reopened = Checkpointer(run_dir)  # as --resume opens it
  restored, _, step = reopened.restore(state)
  assert step == saved[-1]
  for got, want in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(got, want)
  reopened.close()


def test_the_first_checkpoint_does_not_fit(disk, state):
  run_dir = str(disk / "run")
  checkpointer = Checkpointer(run_dir)
  fill(disk)
  with pytest.raises(DiskFullError) as exc:
    checkpointer.save(512, state, {})
  assert str(exc.value) == (f"no space left on device writing {run_dir}/checkpoints (no complete checkpoint yet); "
                            f"free space and start the run again (--overwrite replaces {run_dir})")
  assert os.listdir(checkpointer.directory) == []
  checkpointer.close()


def test_log_until_the_disk_is_full_then_resume(disk, state):
  run_dir, last = str(disk / "run"), 512 * 100_000  # a checkpoint after every row, so a resume drops none of them
  checkpointer = Checkpointer(run_dir)
  checkpointer.save(last, state, {})
  logger = RunLogger(run_dir, COLUMNS, total_steps=10**9, start_step=0, config={}, progress=False)
  logger.log(dict(global_step=512, loss=0.5))
  ballast = fill(disk)
  with pytest.raises(DiskFullError) as exc:  # the files' last pages take a few rows more
    for step in range(1024, last, 512):
      logger.log(dict(global_step=step, loss=0.25))
  writing = re.search(r"writing (\S+) ", str(exc.value)).group(1)  # whichever file's last page filled first
  assert writing in (f"{run_dir}/{PROGRESS}", f"{run_dir}/events.out.tfevents.*")
  assert str(exc.value) == message(run_dir, writing, last)
  logger.close()  # the failure was reported: closing says nothing more

  # resuming on the still-full disk: the checkpoint reads, the logger fails in one line, not a traceback
  restored, _, step = Checkpointer(run_dir).restore(state)
  assert step == last
  with pytest.raises(DiskFullError) as exc:
    RunLogger(run_dir, COLUMNS, total_steps=10**9, start_step=last, config={}, progress=False)
  assert str(exc.value) == message(run_dir, f"{run_dir}/events.out.tfevents.*", last)

  # space freed: logging goes on after the whole rows (a row the full disk cut short is dropped)
  os.remove(ballast)
  logger = RunLogger(run_dir, COLUMNS, total_steps=10**9, start_step=last, config={}, progress=False)
  logger.log(dict(global_step=last + 512, loss=0.125))
  logger.close()
  rows = read_csv(os.path.join(run_dir, PROGRESS))
  assert rows[0] == dict(global_step="512", loss="0.5") and rows[-1] == dict(global_step=str(last + 512), loss="0.125")
  assert [int(r["global_step"]) for r in rows[:-1]] == list(range(512, 512 * len(rows), 512))
  assert all(r["loss"] == "0.25" for r in rows[1:-1])
  checkpointer.close()


def test_resume_drops_rows_after_the_checkpoint_and_a_cut_short_one(tmp_path):
  """progress.csv as a full disk (or a kill) can leave it: the last row cut short, rows after the checkpoint."""
  path = tmp_path / PROGRESS
  reopen = lambda step: RunLogger(str(tmp_path), COLUMNS, total_steps=4096, start_step=step, config={},  # noqa: E731
                                  progress=False).close()
  path.write_bytes(b"global_step,loss\r\n512,0.5\r\n1024,0.25\r\n1536,0.2\r\n2048,0.")
  reopen(1024)
  assert path.read_bytes() == b"global_step,loss\r\n512,0.5\r\n1024,0.25\r\n"
  path.write_bytes(b"global_step,loss\r\n512,0.5\r\n1024,0.")  # cut short before the checkpoint
  reopen(1024)
  assert path.read_bytes() == b"global_step,loss\r\n512,0.5\r\n"
  path.write_bytes(b"global_st")  # not even a whole header: written afresh
  reopen(0)
  assert path.read_bytes() == b"global_step,loss\r\n"


def test_a_training_run_fills_the_disk(disk, run_ppo_cli):
  """End to end: the run stops with exit code 1 and one line; resuming while the disk is still full says the same in
  one line; with space freed the run goes on."""
  run_dir = str(disk / "run")
  res = run_ppo_cli("--env", "CartPole-v1", "--total-timesteps", 51200, "--eval-every", 0, "--checkpoint-every", 512,
                    "--keep-checkpoints", 1000, "--no-progress", "--run-dir", run_dir)
  names = os.listdir(os.path.join(run_dir, "checkpoints"))
  assert res.returncode == 1 and all(n.isdigit() for n in names), (names, res.stderr)
  steps = sorted(map(int, names))
  assert res.stderr == f"error: {message(run_dir, f'{run_dir}/checkpoints', steps[-1])}\n"

  ballast = fill(disk)
  res = run_ppo_cli("--resume", run_dir, "--no-progress")
  assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
  errors = [line for line in res.stderr.splitlines() if not line.startswith("resuming ")]
  assert errors == [f"error: {message(run_dir, f'{run_dir}/events.out.tfevents.*', steps[-1])}"]

  os.remove(ballast)
  for step in steps[:-1]:  # room for more checkpoints
    shutil.rmtree(os.path.join(run_dir, "checkpoints", str(step)))
  res = run_ppo_cli("--resume", run_dir, "--no-progress")
  last = max(int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints")))
  assert res.returncode == 1 and last > steps[-1], res.stderr  # it went on, until the tmpfs filled again
  assert res.stderr.splitlines()[-1] == f"error: {message(run_dir, f'{run_dir}/checkpoints', last)}"
