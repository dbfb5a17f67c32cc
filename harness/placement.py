"""Where things live, decided once per run: the learner state on the learner device(s), acting where it pays.

- Learner: `parallel.learner_devices(--learner-devices)`, the first local devices of JAX's default backend (the
  accelerator when there is one). The update puts the state there at every call (`parallel.lift`), whatever device
  the acting side hands arrays back from.
- Acting, unless `--actor-device` names a device: vector observations act on the CPU, where a tiny MLP call costs
  ~35 us on XLA:CPU against an estimated ~120 us of launches and copies on a GPU; image observations act on the
  accelerator when there is one. Of the default backend's local devices, acting takes the first one outside the
  learner's, when there is one (as cleanba splits actor and learner devices), so actors do not queue behind the
  update; otherwise the first learner device. Forced host devices on a CPU machine follow the same rule, which is
  how the CPU tests exercise a separate acting device.
- Actors act with copies of the parameters on the acting device (`envs.actors.ParamStore.publish`): the update
  donates the learner's arrays.
"""
from __future__ import annotations

import dataclasses

import jax

from algorithms.parallel import learner_devices
from harness.cli import UsageError


def name(device) -> str:
  """`platform:id`, the spelling `--actor-device` takes (cpu:0, gpu:1)."""
  return f"{device.platform}:{device.id}"


@dataclasses.dataclass(frozen=True)
class Placement:
  learner: tuple  # this process's learner devices
  actor: object   # the device the policy acts on

  def frames_device(self, image_obs: bool):
    """Where a synchronous rollout keeps the frames it acted on (`envs.rollout.Rollout`'s `obs_device`): the
    accelerator when the policy acts on the one learner device (frames then cross to it once, not twice); None,
    host memory, otherwise (the CPU: nothing to save; several learner devices: the update splits the batch)."""
    one = len(self.learner) == 1 and jax.process_count() == 1 and self.actor == self.learner[0]
    return self.actor if image_obs and one and self.actor.platform != "cpu" else None

  def describe(self) -> dict:
    return dict(learner_devices=[name(d) for d in self.learner], actor_device=name(self.actor))


def parse_device(spec: str):
  """`--actor-device`: `cpu`, `gpu`, or `platform:index` such as `cpu:1`."""
  platform_name, _, index = spec.partition(":")
  try:
    return jax.devices(platform_name)[int(index or 0)]
  except (RuntimeError, ValueError, IndexError):
    raise UsageError(f"--actor-device {spec}: no such JAX device here (try cpu or cpu:0)") from None


def place(actor_device: str | None, image_obs: bool, num_learner_devices: int) -> Placement:
  """The run's placement (see the module docstring). Call after `jax.distributed` is initialised."""
  local = jax.local_devices()
  try:
    learner = tuple(learner_devices(num_learner_devices))
  except ValueError:
    raise UsageError(f"--learner-devices {num_learner_devices}: only {len(local)} local devices here") from None
  if actor_device is not None:
    actor = parse_device(actor_device)
  elif not image_obs and local[0].platform != "cpu":
    actor = jax.local_devices(backend="cpu")[0]
  else:
    actor = local[num_learner_devices] if len(local) > num_learner_devices else local[0]
  return Placement(learner, actor)
