"""The seed's ``output_activation: "tanh"``: a single-layer network with a tanh output.

The seed lists ``sigmoid``, ``exp`` and ``tanh`` as GLM output activations. The first two are
inverse links of exponential families (logit, log); tanh is not: its mean lies in (-1, 1),
and no exponential family fedsilo fits has that mean space with tanh's inverse as link. So a
tanh model is not a GLM that Newton / IRLS could fit exactly with standard errors, but the
seed's other reading of iai_glm -- "a single-layer neural net with an output activation" --
applies: with ``solver: "sgd"`` and ``ml_task.type: "normal"`` fedsilo trains::

    mu_i = tanh(beta_0 + x_i . w + offset_i),   loss = sum_i s_i (y_i - mu_i)^2 / 2 / W
                                                       + the elastic-net penalty

i.e. nonlinear least squares with a tanh output, by the configured optimizer and strategy.
The reported loss is the mean squared error, as for the normal family. The config refuses
tanh under ``newton`` (with this reason) and with any family other than ``normal``.

:class:`TanhOutput` stands in for a :class:`~fedsilo.regression.families.Family` wherever
the sgd solver, evaluation and the export read one (mean, unit deviance, loss factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedsilo.regression.families import Family

__all__ = ["TANH_NEWTON_REASON", "GLMFamily", "TanhOutput"]

#: why the newton solver refuses ``output_activation: "tanh"``
TANH_NEWTON_REASON = (
    "tanh is not the inverse of a link for any exponential family (its mean would lie in "
    "(-1, 1)), and the newton solver fits exponential-family GLMs exactly by IRLS; set "
    "solver 'sgd' with ml_task.type 'normal' to train a single-layer network with a tanh "
    "output and squared-error loss, or use 'sigmoid' (logit), 'exp' (log) or 'identity'"
)


@dataclass(frozen=True)
class TanhOutput:
    """Mean ``tanh(eta)`` with squared-error loss: the sgd solver's tanh model.

    Attributes
    ----------
    task : str
        ``"normal"``: the squared-error loss is the normal family's deviance.
    activation : "tanh"
    power : float
        0 (the variance function of squared error is constant).
    """

    task: str = "normal"
    activation: Literal["tanh"] = "tanh"
    power: float | None = 0.0

    @property
    def link(self) -> str:
        """``"atanh"``: the inverse of the output activation (not a GLM link)."""
        return "atanh"

    @property
    def estimates_scale(self) -> bool:
        return True

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """``mu = tanh(eta)``; shape (n_rows,)."""
        result: np.ndarray = np.tanh(np.asarray(eta, dtype=np.float64))
        return result

    def unit_deviance(self, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """The squared error ``(y - tanh(eta))^2`` per row; shape (n_rows,)."""
        residual = np.asarray(y, dtype=np.float64) - self.mean(eta)
        result: np.ndarray = residual * residual
        return result

    def loss_factor(self) -> float:
        """1: the reported loss is the mean squared error."""
        return 1.0

    def target_problem(self, y: np.ndarray) -> str | None:
        """None: squared error is defined for any real target."""
        return None

    def __str__(self) -> str:
        return "tanh output with squared-error loss (sgd only)"


#: what the glm package's sgd path, evaluation and export accept as the model's family
GLMFamily = Family | TanhOutput
