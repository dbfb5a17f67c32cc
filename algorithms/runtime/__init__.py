"""Run infrastructure shared by every trainer: CLI parsing and usage errors, run directories, logs, checkpoints."""
