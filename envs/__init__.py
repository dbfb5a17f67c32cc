"""Environment side of jaxpod: envpool construction, episode statistics and acting loops.

Nothing here imports optax or the learners; the learners never import envpool.
"""
from envs.registry import EnvSpec, UnknownEnvError, make_env, resolve_env
from envs.episodes import AgentTrackers, EpisodeTracker, derive_flags

__all__ = ["EnvSpec", "UnknownEnvError", "make_env", "resolve_env", "AgentTrackers", "EpisodeTracker",
           "derive_flags"]
