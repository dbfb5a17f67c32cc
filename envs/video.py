"""MP4 videos of evaluation games: Atari frames from envpool's RGB render, MuJoCo through MuJoCo's offscreen
renderer (headless EGL by default, or OSMesa with MUJOCO_GL=osmesa). Needs `pip install '.[video]'` (PyAV, and the
mujoco package for MuJoCo's OpenGL context).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from envs.registry import EnvSpec

# Agent steps per second of video: Atari acts every 4 frames of 60 Hz; MuJoCo tasks' control steps vary (HalfCheetah
# 0.05 s, Hopper 0.008 s), so they play at a fixed, watchable rate.
FPS = {"atari": 15, "mujoco": 30}
_GL_CONTEXT = None


class VideoError(RuntimeError):
  """A video cannot be made here; the message names what to install or change."""


def _make_context(backend: str):
  os.environ.setdefault("PYOPENGL_PLATFORM", backend)
  if backend == "egl":
    from mujoco.egl import GLContext
  else:
    from mujoco.osmesa import GLContext
  context = GLContext(640, 480)
  context.make_current()
  return context


def _probe(env_id: str) -> None:
  """Renders one MuJoCo frame (run in a child process by `prepare`: MuJoCo ends the process on a GL failure)."""
  from envs.registry import make_env
  global _GL_CONTEXT
  _GL_CONTEXT = _make_context(os.environ["MUJOCO_GL"])
  env = make_env(env_id, num_envs=1, seed=0, train=False, render=True)
  env.reset()
  frame = env.render(env_ids=[0])[0]
  assert frame.ndim == 3 and frame.shape[2] == 3 and frame.any()


def prepare(spec: EnvSpec) -> None:
  """Checks that videos of `spec`'s env can be made, and for MuJoCo makes an offscreen OpenGL context current.

  NOTE: envpool's MuJoCo renderer draws into whatever OpenGL context is current in the calling thread and fails
  without one; the mujoco package's EGL/OSMesa context is such a context, made once and kept for the process.
  MuJoCo's error handler ends the process on a GL failure, so one frame is first rendered in a child process.
  """
  global _GL_CONTEXT
  try:
    import av  # noqa: F401
  except ImportError:
    raise VideoError("--video needs PyAV to write MP4: pip install '.[video]'") from None
  if spec.family not in FPS:
    raise VideoError(f"--video supports Atari and MuJoCo envs, not {spec.family} ({spec.env_id})")
  if spec.family != "mujoco" or _GL_CONTEXT is not None:
    return
  backend = os.environ.setdefault("MUJOCO_GL", "egl")
  if backend not in ("egl", "osmesa"):
    raise VideoError(f"--video on MuJoCo renders headless: set MUJOCO_GL=egl or osmesa, not {backend}")
  library = "libEGL (apt install libegl1)" if backend == "egl" else "libOSMesa (apt install libosmesa6)"
  try:
    import mujoco  # noqa: F401
  except ImportError:
    raise VideoError(f"--video on MuJoCo needs the mujoco package and {library}: pip install '.[video]'") from None
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  probe = subprocess.run([sys.executable, "-c", f"from envs.video import _probe; _probe({spec.env_id!r})"],
                         cwd=root, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])))
  if probe.returncode != 0:
    raise VideoError(f"--video on MuJoCo could not render offscreen with MUJOCO_GL={backend}: install {library} "
                     f"or try MUJOCO_GL={'osmesa' if backend == 'egl' else 'egl'}")
  _GL_CONTEXT = _make_context(backend)


class Mp4Writer:
  """Streams RGB frames [H, W, 3] uint8 into an H.264 MP4 (yuv420p, so any player opens it)."""

  def __init__(self, path: str, fps: int):
    import av
    self.path, self.frames = path, 0
    self._av = av
    self._container = av.open(path, mode="w")
    self._stream = self._container.add_stream("libx264", rate=fps)
    self._stream.pix_fmt = "yuv420p"

  def add(self, frame: np.ndarray) -> None:
    stream = self._stream
    if self.frames == 0:
      stream.height, stream.width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
    image = np.ascontiguousarray(frame[:stream.height, :stream.width])  # yuv420p needs even sizes
    for packet in stream.encode(self._av.VideoFrame.from_ndarray(image, format="rgb24")):
      self._container.mux(packet)
    self.frames += 1

  def close(self) -> None:
    for packet in self._stream.encode():
      self._container.mux(packet)
    self._container.close()


def count_frames(path: str) -> int:
  """Decodes an MP4 and counts its frames (for checks)."""
  import av
  with av.open(path) as container:
    return sum(1 for _ in container.decode(video=0))
