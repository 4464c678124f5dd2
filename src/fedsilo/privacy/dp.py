"""Differential privacy in fedsilo: what it protects, and the ``differential_privacy_params``.

The privacy unit
----------------
**One training row of one silo.** Each client enforces differential privacy on its own, on
what it releases from its own training file, whatever the other silos do. A session with
``{"epsilon": 4, "max_grad_norm": 7}`` therefore gives *each* silo a (4, delta) guarantee
about *its* rows; it is not one budget shared by all silos, and one silo's guarantee does not
depend on trusting another silo or the server.

What epsilon means for a data owner
-----------------------------------
Take everything a client released during a whole session (every model update or statistic
it sent, in every round) and an adversary who sees all of it and knows every other row. For
any one row, and any conclusion the adversary could draw, the probability of that
conclusion changes by at most a factor ``e**epsilon`` between the world where the row was in
the silo's training data and the world where it was not, except with probability ``delta``.
``epsilon = 1`` is a factor of 2.7, ``epsilon = 4`` a factor of 55; smaller is more private
and noisier. ``delta`` must be far below ``1 / n_rows``: a mechanism that publishes one
random row in full satisfies ``delta = 1 / n_rows``.

The budget spans the **whole session** (all rounds, all local epochs, all steps): the noise
is calibrated up front so that the last round ends at or just under ``epsilon``, and each
client reports ``epsilon_spent`` after every round (see :mod:`fedsilo.privacy.accounting`).

What is released, and what is not covered
-----------------------------------------
* ``ffnet`` and ``glm`` with ``solver = "sgd"`` train with DP-SGD (per-row gradient clipping
  at ``max_grad_norm``, Gaussian noise, Poisson sampling; :mod:`fedsilo.privacy.dpsgd`):
  the weights a client sends after each round are covered. A client under DP does not send
  its training loss (an exact statistic of the training rows).
* ``glm`` with ``solver = "newton"`` releases each round a noised, per-row-clipped gradient
  and Hessian of the local objective (:mod:`fedsilo.privacy.newton`).
* Row counts and column names/dtypes are sent when a client joins and are **not**
  protected (they are public in every fedsilo session).
* Evaluation metrics computed on the client's **test** file are released exactly: the test
  rows are outside the guarantee. A client under DP without a test file reports no metrics
  rather than metrics of its training rows.

Who learns what
---------------
Without DP, the server sees every client's exact model update each round; membership
inference and gradient inversion attacks on such updates can reveal whether a row was used
and sometimes reconstruct it. Each peer silo sees only the global model, an average over
silos, which still carries information about every silo's rows. With DP, every release of a
client is already noised on the client, so the server, each peer, and anyone who obtains
the final model learn at most what the (epsilon, delta) guarantee allows about any one row
of that silo: the guarantee holds against the server itself, with no trust in it beyond
following the protocol (see "Limits" in :mod:`fedsilo.privacy.accounting`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fedsilo.errors import ConfigError

__all__ = ["DEFAULT_DELTA_CAP", "DifferentialPrivacyParams", "resolve_delta"]

#: The default delta never exceeds this (the value most DP-SGD literature reports).
DEFAULT_DELTA_CAP = 1e-5


class DifferentialPrivacyParams(BaseModel):
    """``differential_privacy_params`` of a model_config, shared by every package.

    Parameters
    ----------
    epsilon : float > 0
        The privacy budget of the whole session, per silo (see the module docstring).
        The seed schema allows 0, which no mechanism with any utility can meet.
    max_grad_norm : float > 0
        Each training row's gradient is clipped to this L2 norm before noise is added; the
        noise standard deviation is ``noise_multiplier * max_grad_norm``.
    delta : float in (0, 1), optional
        The probability the epsilon bound may fail. Default: ``min(1e-5, 1 / (10 * n))``
        for a silo of ``n`` training rows (see :func:`resolve_delta`).
    max_hessian_norm : float > 0, optional
        ``glm`` newton only: each row's contribution to the Hessian is clipped to this
        Frobenius norm. Default: ``max_grad_norm``.
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    max_grad_norm: float = Field(gt=0, allow_inf_nan=False)
    delta: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    max_hessian_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @property
    def hessian_norm(self) -> float:
        """The Hessian clipping bound: ``max_hessian_norm``, else ``max_grad_norm``."""
        return self.max_hessian_norm if self.max_hessian_norm is not None else self.max_grad_norm


def resolve_delta(params: DifferentialPrivacyParams, n_rows: int) -> float:
    """The delta a silo of ``n_rows`` training rows uses, checked against ``1 / n_rows``.

    Why this default: delta bounds the probability that the epsilon guarantee fails, and a
    mechanism that publishes one random row in full already meets ``delta = 1 / n``; a
    meaningful delta is well below that. ``1e-5`` is the customary value, and
    ``1 / (10 n)`` keeps delta at a tenth of ``1 / n`` for silos above 10,000 rows, where
    ``1e-5`` would no longer be small. It depends on the silo's own row count, which only
    that silo's client needs to know.

    Parameters
    ----------
    params : DifferentialPrivacyParams
    n_rows : int >= 1
        The silo's training rows.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        When an explicit delta is not below ``1 / n_rows`` (the client refuses such a
        budget on behalf of its data owner), or ``n_rows < 1``.
    """
    if n_rows < 1:
        raise ConfigError(f"Differential privacy needs at least 1 training row. Got {n_rows}.")
    if params.delta is None:
        return min(DEFAULT_DELTA_CAP, 1.0 / (10.0 * n_rows))
    if params.delta >= 1.0 / n_rows:
        raise ConfigError(
            f"The 'delta' parameter of differential_privacy_params must be below 1 / n_rows "
            f"= {1.0 / n_rows:.3g} for this silo of {n_rows} training rows (a mechanism that "
            f"publishes one random row meets delta = 1 / n_rows). Got {params.delta:g}."
        )
    return params.delta
