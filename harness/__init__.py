"""The run machinery: CLI and usage errors, run directories, logs, checkpoints, XLA settings, device placement,
process groups (jax.distributed), Ray workers, restoring runs, and the training loop every trainer shares.

It uses `algorithms`, `envs` and `networks`; none of them uses it.
"""
