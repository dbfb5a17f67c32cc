"""The learners never import envpool; the env side never imports optax (house rule 1)."""
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("module, forbidden", [
    ("algorithms.ppo", "envpool"), ("algorithms.gae", "envpool"), ("algorithms.normalize", "envpool"),
    ("algorithms.parallel", "envpool"), ("envs.rollout", "optax"), ("envs.registry", "optax"),
    ("networks", "envpool"), ("networks", "optax"), ("envs.video", "optax"),
])
def test_import_boundaries(module, forbidden):
  code = f"import sys, {module}; sys.exit(1 if '{forbidden}' in sys.modules else 0)"
  assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, f"{module} imports {forbidden}"
