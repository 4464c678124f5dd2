"""glm: generalized linear models fitted across silos, exactly.

Families (the seed's ``ml_task.type``): ``logistic``, ``normal``, ``poisson``, ``gamma``,
``inverseGaussian`` and ``tweedie`` (with ``power``), with the elastic-net penalty
``alpha`` / ``l1_ratio``, optional ``offset`` / ``exposure`` and ``sample_weight`` columns.

Two solvers: ``newton`` (default) sums each silo's gradient, Fisher matrix and deviance and
takes exact (proximal) Newton steps on the server, so the fit equals statsmodels' /
scikit-learn's on the pooled rows in a handful of rounds; ``sgd`` runs a strategy over local
SGD epochs, as the seed's GLM tutorial describes.

Parts: ``config.py`` (model_config / data_config), ``client.py`` (the executor),
``server.py`` (the Newton workflow), ``private_newton.py`` (Newton under differential
privacy), ``sgd.py`` (the sgd workflow, on :func:`fedsilo.workflows.run_rounds`),
``local_sgd.py`` (the sgd solver's client half, torch), ``tanh.py`` (the seed's tanh output
activation: a single-layer tanh network with squared-error loss, sgd only), ``export.py`` and
``sklearn_export.py`` (the user's model). The families and the federated IRLS mathematics
live in :mod:`fedsilo.regression`, shared with linear_inference. Importing this module
imports no torch: the executor and the export are re-exported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.glm.config import (
    GLMDataConfig,
    GLMModelConfig,
    check_consistency,
    parameter_count,
)
from fedsilo.packages.glm.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.glm.client import GLMExecutor
    from fedsilo.packages.glm.export import GLMModel

__getattr__ = lazy_exports(
    __name__,
    {
        "GLMExecutor": "fedsilo.packages.glm.client",
        "GLMModel": "fedsilo.packages.glm.export",
    },
)

__all__ = [
    "PACKAGE",
    "GLMDataConfig",
    "GLMExecutor",
    "GLMModel",
    "GLMModelConfig",
    "check_consistency",
    "run",
]

PACKAGE: ModelPackage[GLMModelConfig, GLMDataConfig] = ModelPackage(
    name="glm",
    description=(
        "Generalized linear models (logistic, normal, Poisson, gamma, inverse Gaussian, "
        "Tweedie) with elastic net, offsets and weights; exact federated Newton fits that "
        "equal the pooled statsmodels / scikit-learn fit, or SGD with any strategy."
    ),
    kind=SessionKind.hfl,
    model_config_type=GLMModelConfig,
    data_config_type=GLMDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.glm.client:GLMExecutor",
    export_ref="fedsilo.packages.glm.export:GLMModel",
    check=check_consistency,
    parameter_count=parameter_count,
)
