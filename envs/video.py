"""MP4 videos of evaluation games: Atari frames from envpool's RGB render, MuJoCo through MuJoCo's offscreen
renderer (headless EGL by default, or OSMesa with MUJOCO_GL=osmesa). Needs `pip install '.[video]'` (PyAV, and the
mujoco package for MuJoCo's OpenGL context).
"""
from __future__ import annotations

import os

import numpy as np

from envs.registry import EnvSpec

# Agent steps per second of video: Atari acts every 4 frames of 60 Hz; MuJoCo tasks' control steps vary (HalfCheetah
# 0.05 s, Hopper 0.008 s), so they play at a fixed, watchable rate.
FPS = {"atari": 15, "mujoco": 30}
_GL_CONTEXT = None


class VideoError(RuntimeError):
  """A video cannot be made here; the message names what to install or change."""


def prepare(spec: EnvSpec) -> None:
  """Checks that videos of `spec`'s env can be made, and for MuJoCo makes an offscreen OpenGL context current.

  NOTE: envpool's MuJoCo renderer draws into whatever OpenGL context is current in the calling thread and fails
  without one; the mujoco package's EGL/OSMesa context is such a context, made once and kept for the process.
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
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    import mujoco  # noqa: F401
    if backend == "egl":
      from mujoco.egl import GLContext
    else:
      from mujoco.osmesa import GLContext
    context = GLContext(640, 480)
    context.make_current()
  except ImportError as e:
    raise VideoError(f"--video on MuJoCo needs the mujoco package and {library}: pip install '.[video]' "
                     f"({e})") from None
  except Exception as e:  # no display library, no device: PyOpenGL and EGL raise many types
    raise VideoError(f"--video on MuJoCo could not create an offscreen OpenGL context with MUJOCO_GL={backend}; "
                     f"install {library} or try MUJOCO_GL={'osmesa' if backend == 'egl' else 'egl'} "
                     f"({type(e).__name__})") from None
  _GL_CONTEXT = context


def write_mp4(path: str, frames: list[np.ndarray], fps: int) -> None:
  """Writes RGB frames [H, W, 3] uint8 as H.264 (yuv420p, so any player opens it)."""
  import av
  height, width = frames[0].shape[:2]
  with av.open(path, mode="w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = width - width % 2, height - height % 2  # yuv420p needs even sizes
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:stream.height, :stream.width]), format="rgb24")
      for packet in stream.encode(image):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def count_frames(path: str) -> int:
  """Decodes an MP4 and counts its frames (for checks)."""
  import av
  with av.open(path) as container:
    return sum(1 for _ in container.decode(video=0))
