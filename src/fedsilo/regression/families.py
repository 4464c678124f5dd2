"""GLM families and links: deviance, variance and the per-row terms of Newton / IRLS.

A GLM models the mean of the target as ``mu = h(eta)``, ``eta = x . beta + offset``, with an
inverse link ``h`` (the seed's ``output_activation``) and a variance function ``V(mu)`` fixed
by the family. Every family here is an exponential dispersion model, so half the unit
deviance is the negative log-likelihood up to terms free of ``beta`` (scikit-learn's
``_glm`` module docstring) and minimising the (weighted) deviance is maximum likelihood.

Supported combinations (the seed's ``ml_task.type`` x ``output_activation``):

===================  =====================  =============================================
ml_task.type         variance V(mu)          output_activation (link)
===================  =====================  =============================================
``logistic``         mu (1 - mu)             ``sigmoid`` (logit; canonical)
``normal``           1                       ``identity`` (canonical) or ``exp`` (log)
``poisson``          mu                      ``exp`` (log; canonical)
``gamma``            mu^2                    ``exp`` (log)
``inverseGaussian``  mu^3                    ``exp`` (log)
``tweedie``          mu^power, power >= 1    ``exp`` (log)
===================  =====================  =============================================

Everything else is refused by the config (:func:`allowed_activations`): a sigmoid mean for
counts or an identity mean for a positive-only family can leave the family's domain, and
``tanh`` is not the inverse of any GLM link for these families.

All per-row terms are computed from ``eta`` rather than ``mu`` where that avoids overflow or
cancellation (``log1p(exp(eta))`` through ``logaddexp``, ``mu^(1-p) = exp((1-p) eta)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# scipy ships no type stubs (and the project's mypy config does not list it).
from scipy.special import expit, xlogy  # type: ignore[import-untyped]

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ACTIVATION",
    "FAMILY_POWERS",
    "Activation",
    "Family",
    "RowTerms",
    "TaskType",
    "allowed_activations",
    "make_family",
]

TaskType = Literal["logistic", "normal", "poisson", "gamma", "inverseGaussian", "tweedie"]
Activation = Literal["sigmoid", "exp", "identity"]

#: the inverse links fedsilo knows (the seed's ``output_activation`` values that are links)
ACTIVATIONS: tuple[Activation, ...] = ("sigmoid", "exp", "identity")

#: the Tweedie power of each fixed-power family (``V(mu) = mu^power``); logistic has none
FAMILY_POWERS: dict[str, float] = {
    "normal": 0.0,
    "poisson": 1.0,
    "gamma": 2.0,
    "inverseGaussian": 3.0,
}

#: the link each family uses when ``output_activation`` is not given
DEFAULT_ACTIVATION: dict[str, Activation] = {
    "logistic": "sigmoid",
    "normal": "identity",
    "poisson": "exp",
    "gamma": "exp",
    "inverseGaussian": "exp",
    "tweedie": "exp",
}

_ALLOWED: dict[str, tuple[Activation, ...]] = {
    "logistic": ("sigmoid",),
    "normal": ("identity", "exp"),
    "poisson": ("exp",),
    "gamma": ("exp",),
    "inverseGaussian": ("exp",),
    "tweedie": ("exp",),
}

_LINK_NAMES: dict[Activation, str] = {"sigmoid": "logit", "exp": "log", "identity": "identity"}


def allowed_activations(task: str) -> tuple[Activation, ...]:
    """The ``output_activation`` values that make sense for ``ml_task.type == task``."""
    return _ALLOWED[task]


@dataclass(frozen=True)
class RowTerms:
    """What each row contributes to the Newton / IRLS statistics at one ``beta``.

    With ``h(beta) = 1/2 * unit_deviance(y, mu(x . beta + offset))``, one row contributes
    ``gradient_scale * x`` to the gradient of ``h`` and ``fisher_weight * x x^T`` to its
    expected Hessian (Fisher information), before its sample weight. Kept per row, unsummed,
    so differential privacy can clip each row's contribution before the sum.

    Attributes
    ----------
    gradient_scale : ndarray of shape (n_rows,)
        ``d h / d eta = -(y - mu) * h'(eta) / V(mu)``.
    fisher_weight : ndarray of shape (n_rows,)
        ``h'(eta)^2 / V(mu)``, >= 0 (the IRLS working weight).
    deviance : ndarray of shape (n_rows,)
        The unit deviance ``d(y, mu)`` (``inf`` where ``mu`` overflowed).
    pearson : ndarray of shape (n_rows,)
        ``(y - mu)^2 / V(mu)``, whose weighted sum over (n - p) estimates the dispersion.
    """

    gradient_scale: np.ndarray
    fisher_weight: np.ndarray
    deviance: np.ndarray
    pearson: np.ndarray


@dataclass(frozen=True)
class Family:
    """A family with its link.

    Parameters
    ----------
    task : str
        The seed's ``ml_task.type`` (``"logistic"``, ``"normal"``, ...).
    activation : {"sigmoid", "exp", "identity"}
        The inverse link.
    power : float or None
        The variance power ``p`` of ``V(mu) = mu^p``; None for logistic.
    """

    task: str
    activation: Activation
    power: float | None

    @property
    def link(self) -> str:
        """The link's name: ``"logit"``, ``"log"`` or ``"identity"``."""
        return _LINK_NAMES[self.activation]

    @property
    def estimates_scale(self) -> bool:
        """True when the dispersion is estimated (all but logistic and Poisson, where it is 1)."""
        return self.task not in ("logistic", "poisson")

    # ------------------------------------------------------------------ mean and link

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """The inverse link ``mu = h(eta)``.

        Parameters
        ----------
        eta : ndarray of shape (n_rows,)

        Returns
        -------
        ndarray of shape (n_rows,), float64
            ``inf`` where ``exp`` overflows (the caller treats such a point as infeasible).
        """
        eta = np.asarray(eta, dtype=np.float64)
        if self.activation == "sigmoid":
            result: np.ndarray = np.asarray(expit(eta), dtype=np.float64)
            return result
        if self.activation == "exp":
            with np.errstate(over="ignore"):
                result = np.exp(eta)
            return result
        return eta.copy()

    def link_of(self, mu: float) -> float:
        """The link ``g(mu) = h^-1(mu)`` of one mean (used for the intercept-only start).

        Raises
        ------
        ValueError
            When ``mu`` is outside the link's domain.
        """
        if self.activation == "sigmoid":
            if not 0.0 < mu < 1.0:
                raise ValueError(f"the logit link needs a mean in (0, 1); got {mu}")
            return math.log(mu / (1.0 - mu))
        if self.activation == "exp":
            if not mu > 0.0:
                raise ValueError(f"the log link needs a mean > 0; got {mu}")
            return math.log(mu)
        return mu

    # ------------------------------------------------------------------ per-row terms

    def row_terms(self, y: np.ndarray, eta: np.ndarray) -> RowTerms:
        """Per-row gradient scale, Fisher weight, unit deviance and Pearson residual^2.

        Parameters
        ----------
        y : ndarray of shape (n_rows,)
            Targets in the family's domain (see :meth:`target_problem`).
        eta : ndarray of shape (n_rows,)
            Linear predictor, offset included.

        Returns
        -------
        RowTerms
        """
        y = np.asarray(y, dtype=np.float64)
        eta = np.asarray(eta, dtype=np.float64)
        if self.task == "logistic":
            mu = expit(eta)
            variance = mu * (1.0 - mu)
            # For the canonical logit, h'(eta) = V(mu): the ratio is exactly 1.
            residual = y - mu
            with np.errstate(divide="ignore", invalid="ignore"):
                pearson = np.where(variance > 0, residual**2 / variance, np.inf)
            # 1/2 deviance = log(1 + e^eta) - y * eta for y in {0, 1}.
            deviance = 2.0 * (np.logaddexp(0.0, eta) - y * eta)
            return RowTerms(-residual, variance, deviance, pearson)
        assert self.power is not None
        p = self.power
        if self.activation == "identity":  # normal only (the config refuses the rest)
            residual = y - eta
            ones = np.ones_like(eta)
            return RowTerms(-residual, ones, residual**2, residual**2)
        # Log link with V(mu) = mu^p: h'(eta) = mu, so h'/V = mu^(1-p), h'^2/V = mu^(2-p).
        with np.errstate(over="ignore", invalid="ignore"):
            mu = np.exp(eta)
            mu_1p = np.exp((1.0 - p) * eta)
            mu_2p = np.exp((2.0 - p) * eta)
            residual = y - mu
            gradient_scale = -residual * mu_1p
            pearson = residual**2 * np.exp(-p * eta)
            deviance = self._log_link_deviance(y, eta, mu, mu_1p, mu_2p)
        return RowTerms(gradient_scale, mu_2p, deviance, pearson)

    def _log_link_deviance(
        self,
        y: np.ndarray,
        eta: np.ndarray,
        mu: np.ndarray,
        mu_1p: np.ndarray,
        mu_2p: np.ndarray,
    ) -> np.ndarray:
        # Unit deviances of the Tweedie family (scikit-learn's HalfTweedieLoss, times 2),
        # written in eta so log(mu) is never formed from an overflowed mu.
        p = self.power
        assert p is not None
        if p == 0.0:
            result: np.ndarray = (y - mu) ** 2
        elif p == 1.0:
            result = 2.0 * (xlogy(y, y) - y * eta - y + mu)
        elif p == 2.0:
            result = 2.0 * (eta - np.log(y) + y * np.exp(-eta) - 1.0)
        else:
            y_term = np.maximum(y, 0.0) ** (2.0 - p) / ((1.0 - p) * (2.0 - p))
            result = 2.0 * (y_term - y * mu_1p / (1.0 - p) + mu_2p / (2.0 - p))
        return np.where(np.isfinite(result), result, np.inf)

    def unit_deviance(self, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """The unit deviance ``d(y, h(eta))`` per row; shape (n_rows,)."""
        return self.row_terms(y, eta).deviance

    def loss_factor(self) -> float:
        """The reported loss as a multiple of the mean unit deviance.

        Logistic reports cross-entropy, which is half the binomial deviance; the normal
        family's mean unit deviance is the mean squared error; the others report the mean
        unit deviance itself (the seed's metric table).
        """
        return 0.5 if self.task == "logistic" else 1.0

    # -------------------------------------------------------------- target validation

    def target_problem(self, y: np.ndarray) -> str | None:
        """Why ``y`` is outside this family's domain, or None when it is inside.

        Parameters
        ----------
        y : ndarray of shape (n_rows,)

        Returns
        -------
        str or None
            E.g. ``"must be 0 or 1 for logistic; 3 row(s) are not, e.g. 2, 5"``.
        """
        y = np.asarray(y, dtype=np.float64)
        if self.task == "logistic":
            bad, rule = (y != 0.0) & (y != 1.0), "must be 0 or 1 for logistic"
        elif self.power is None or self.power == 0.0:
            return None
        elif self.power < 2.0:
            bad, rule = y < 0.0, f"must be >= 0 for {self._described()}"
        else:
            bad, rule = y <= 0.0, f"must be > 0 for {self._described()}"
        count = int(bad.sum())
        if count == 0:
            return None
        shown = ", ".join(f"{v:g}" for v in sorted({float(v) for v in y[bad][:1000]})[:5])
        return f"{rule}; {count} row(s) are not, e.g. {shown}"

    def _described(self) -> str:
        if self.task == "tweedie":
            return f"tweedie with power {self.power:g}"
        return self.task

    def __str__(self) -> str:
        power = f", power={self.power:g}" if self.task == "tweedie" else ""
        return f"{self.task} family ({self.link} link{power})"


def make_family(
    task: str, activation: Activation | None = None, power: float | None = None
) -> Family:
    """The :class:`Family` of an ``ml_task.type`` with its ``output_activation``.

    Parameters
    ----------
    task : str
        One of ``logistic``, ``normal``, ``poisson``, ``gamma``, ``inverseGaussian``,
        ``tweedie``.
    activation : {"sigmoid", "exp", "identity"}, optional
        Default: the family's usual link (:data:`DEFAULT_ACTIVATION`).
    power : float, optional
        Required for ``tweedie`` (>= 1); ignored otherwise.

    Raises
    ------
    ValueError
        On an unknown task, a link that does not suit the family, or a missing / invalid
        Tweedie power. The config validates all three first, so users see a ConfigError.
    """
    if task not in _ALLOWED:
        raise ValueError(f"unknown ml_task.type {task!r}; expected one of {', '.join(_ALLOWED)}")
    chosen = activation if activation is not None else DEFAULT_ACTIVATION[task]
    if chosen not in _ALLOWED[task]:
        raise ValueError(
            f"output_activation {chosen!r} does not suit ml_task.type {task!r}; "
            f"expected {' or '.join(repr(a) for a in _ALLOWED[task])}"
        )
    if task == "logistic":
        return Family(task, chosen, None)
    if task == "tweedie":
        if power is None or not math.isfinite(power) or power < 1.0:
            raise ValueError(f"tweedie needs a power >= 1; got {power!r}")
        return Family(task, chosen, float(power))
    return Family(task, chosen, FAMILY_POWERS[task])
