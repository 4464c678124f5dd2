"""No package imports another package: shared mathematics lives in ``fedsilo.regression``
(glm and linear_inference), ``fedsilo.workflows`` (round loop, metrics) or
``fedsilo.training`` (the local SGD loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import fedsilo.packages
from fedsilo.regression.families import make_family
from fedsilo.regression.newton import batched_newton_point, batched_step_size

PACKAGES = Path(fedsilo.packages.__file__).parent


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_no_package_imports_another_package() -> None:
    crossings = []
    for folder in sorted(p for p in PACKAGES.iterdir() if (p / "__init__.py").exists()):
        for path in sorted(folder.rglob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[:2] == ["fedsilo", "packages"] and parts[2:3] not in ([], [folder.name]):
                    crossings.append(f"{path.relative_to(PACKAGES)} imports {module}")
    assert crossings == []


def test_the_batched_newton_step_solves_a_least_squares_problem_exactly() -> None:
    # Normal family, identity link: from 0 one Newton step is the least-squares solution.
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(50), rng.normal(size=(50, 2))])
    y = x @ np.array([0.5, -1.0, 2.0]) + rng.normal(scale=0.1, size=50)
    family = make_family("normal", "identity")
    assert family.activation == "identity"
    beta = np.zeros((1, 3))
    gradient = -(x.T @ y)[None, :]  # of half the squared error at 0
    fisher = (x.T @ x)[None, :, :]
    target, singular = batched_newton_point(beta, gradient, fisher)
    assert not singular.any()
    np.testing.assert_allclose(target[0], np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-10)
    assert batched_step_size(target, target)[0] == 0.0
