"""Static typing of the public API: what a user's type checker sees.

* ``tests/typing/user_program.py`` -- a script as a user writes it -- passes ``mypy --strict``
  (and runs);
* the operators ``_ops/_operators.install_operators`` puts on Tensor at import time are exactly
  those ``agnograd/_tensor.py`` declares for type checkers under ``if TYPE_CHECKING:``;
* the namespace's names are static (literal ``__all__`` lists that match the op modules).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import agnograd as ag
from agnograd import _ops
from agnograd._ops import _operators

ROOT = Path(__file__).resolve().parents[1]
USER_PROGRAM = ROOT / "tests" / "typing" / "user_program.py"


def _mypy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          *targets: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the `test` extra)")
    cache = getattr(request.config, "cache", None)
    cache_dir = (cache.mkdir("mypy") if cache is not None
                 else tmp_path_factory.mktemp("mypy-cache"))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(cache_dir), "--no-error-summary", "--show-error-codes", *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_a_user_program_type_checks_under_strict(request, tmp_path_factory):
    res = _mypy(request, tmp_path_factory, str(USER_PROGRAM.relative_to(ROOT)))
    assert res.returncode == 0 and not res.stdout.strip(), (
        f"mypy --strict on {USER_PROGRAM.name} failed:\n{res.stdout}{res.stderr}")


def test_the_user_program_runs():
    runpy.run_path(str(USER_PROGRAM), run_name="user_program")


def _declared_for_type_checkers() -> set[str]:
    """Names declared in ``class Tensor``'s ``if TYPE_CHECKING:`` block of _tensor.py."""
    tree = ast.parse((ROOT / "agnograd" / "_tensor.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Tensor")
    blocks = [n for n in cls.body if isinstance(n, ast.If) and isinstance(n.test, ast.Name)
              and n.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, "expected one `if TYPE_CHECKING:` block in class Tensor"
    names = set()
    for n in blocks[0].body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(n.name)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
    return names


def _installed_at_runtime(monkeypatch) -> set[str]:
    """Names install_operators() sets on Tensor, found by running it on a bare stand-in."""
    class Probe:
        pass

    before = set(vars(Probe))
    monkeypatch.setattr(_operators, "Tensor", Probe)
    _operators.install_operators()
    return set(vars(Probe)) - before


def test_tensor_declares_exactly_the_operators_installed_at_import(monkeypatch):
    declared = _declared_for_type_checkers()
    installed = _installed_at_runtime(monkeypatch)
    assert installed, "install_operators() installed nothing on the probe"
    assert declared == installed, (
        f"installed but not declared for type checkers: {sorted(installed - declared)}; "
        f"declared but not installed: {sorted(declared - installed)}")
    # And the class really has them (install_operators ran at import on the real Tensor).
    assert all(n in vars(ag.Tensor) for n in installed)


def test_the_namespace_lists_its_names_statically():
    names = ag.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(hasattr(ag, n) for n in names)
    for m in _ops.MODULES:
        missing = set(m.__all__) - set(names)
        assert not missing, f"agnograd.__all__ lacks {sorted(missing)} of {m.__name__}"
        assert all(hasattr(m, n) for n in m.__all__)
    assert ag.linalg.__all__ == ag._ops.linalg.EXTENSION_ALL
    assert sorted(ag.fft.__all__) == sorted(ag._ops.fft.EXTENSION_ALL)
    assert all(getattr(ag.linalg, n) is getattr(ag._ops.linalg, n) for n in ag.linalg.__all__)


def test_no_module_makes_public_names_at_run_time():
    """``globals()[...] =`` / ``globals().update`` hide names from type checkers, and so does
    an ``__all__`` that is not a literal list."""
    for path in sorted((ROOT / "agnograd").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "globals":
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} uses globals()")
        for node in tree.body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                       else [])
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                assert isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(
                    node.value, ast.List), f"{path.relative_to(ROOT)}:{node.lineno}: __all__ " \
                    "should be one literal list"
