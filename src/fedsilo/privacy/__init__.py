"""Differential privacy: DP-SGD through Opacus, Gaussian mechanisms, accounting.

The privacy unit is one training row of one silo; epsilon is per silo and spans the whole
session. See :mod:`fedsilo.privacy.dp` for what the guarantee means, and:

* :mod:`fedsilo.privacy.accounting` -- calibrating the noise up front (RDP accountant) and
  the epsilon spent after each round;
* :mod:`fedsilo.privacy.ledger` -- a client's plan for the session and the rounds it may
  still release (a repeated question is answered once, by the client runtime's
  ``release_once`` mod, :mod:`fedsilo.client.mods`);
* :mod:`fedsilo.privacy.dpsgd` -- DP-SGD for :func:`fedsilo.training.train_local`;
* :mod:`fedsilo.privacy.mechanisms` -- clipping, Gaussian noise, secret randomness, and the
  post-processing the server applies (torch-free);
* :mod:`fedsilo.privacy.newton` -- private gradient and Hessian sums (glm newton).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedsilo.privacy.dp import DifferentialPrivacyParams, resolve_delta

if TYPE_CHECKING:
    from fedsilo.privacy.accounting import (
        DPSGDPlan,
        GaussianPlan,
        epsilon_spent,
        gaussian_noise_for,
        plan_dpsgd,
        plan_gaussian,
    )

_ACCOUNTING = (
    "DPSGDPlan",
    "GaussianPlan",
    "epsilon_spent",
    "gaussian_noise_for",
    "plan_dpsgd",
    "plan_gaussian",
)


def __getattr__(name: str) -> Any:
    # The accountant comes from Opacus, which imports torch: configs import this package
    # (for DifferentialPrivacyParams) on the server, which must not pay for torch.
    if name in _ACCOUNTING:
        value = getattr(importlib.import_module("fedsilo.privacy.accounting"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DPSGDPlan",
    "DifferentialPrivacyParams",
    "GaussianPlan",
    "epsilon_spent",
    "gaussian_noise_for",
    "plan_dpsgd",
    "plan_gaussian",
    "resolve_delta",
]
