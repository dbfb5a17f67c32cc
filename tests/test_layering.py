"""Arrows point one way (house rule 1), checked on every module of every package, lazy imports inside functions
included: read from the source (AST) and followed through the project's own modules to what each one reaches.

    harness  ->  algorithms, envs, networks      (the run machinery uses the rest; nothing uses it but the
                                                  entry points and benchmarks)
    algorithms  ->  networks                     (pure learner code: no envs, no harness, no envpool, no Ray)
    envs  ->  (nothing of the project)           (envpool and the acting loops: no optax, no learner code)
    networks  ->  (nothing of the project)       (flax modules: no envpool, no optax)
"""
import ast
import os

import pytest

from conftest import ROOT

PACKAGES = ("algorithms", "envs", "harness", "networks", "benchmarks")
FORBIDDEN = {
    "algorithms": {"envs", "harness", "benchmarks", "envpool", "ray", "tyro", "orbax", "tensorboardX"},
    "envs": {"algorithms", "harness", "benchmarks", "optax"},
    "networks": {"algorithms", "envs", "harness", "benchmarks", "envpool", "optax", "ray"},
    "harness": {"benchmarks"},
}


def _modules() -> dict[str, str]:
  found = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          found[module.removesuffix(".__init__")] = path
  return found


MODULES = _modules()


def _direct_imports(module: str) -> set[str]:
  tree = ast.parse(open(MODULES[module]).read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def _reach(module: str) -> set[str]:
  """Every name imported by `module` and, through the project's own modules, by what it imports."""
  seen, todo, reached = set(), [module], set()
  while todo:
    current = todo.pop()
    if current in seen:
      continue
    seen.add(current)
    for name in _direct_imports(current):
      reached.add(name)
      parts = name.split(".")
      for k in range(len(parts), 0, -1):  # the module itself, or the package whose attribute it names
        candidate = ".".join(parts[:k])
        if candidate in MODULES:
          todo.append(candidate)
          break
  return reached


def test_every_module_is_checked():
  assert len(MODULES) > 40 and {m.split(".")[0] for m in MODULES} == set(PACKAGES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] in FORBIDDEN))
def test_imports_point_one_way(module):
  layer = module.split(".")[0]
  bad = sorted(name for name in _reach(module) if name.split(".")[0] in FORBIDDEN[layer])
  assert not bad, f"{module} ({layer}) reaches {bad}"
