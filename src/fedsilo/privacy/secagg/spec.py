"""``model_config["secure_aggregation"]``: the schema, its defaults, and the errors.

The defaults, and why
---------------------
``enabled = False``
    Secure aggregation costs three extra exchanges per round (keys, shares, unmask) and
    makes the server blind to each client's update, which robust strategies (FedMedian,
    FedTrimmedAvg) need; a session opts in.
``threshold = None`` -> ``max(2, ceil(2 n / 3))`` capped at ``n``
    The number of clients whose shares are needed to recover a missing seed; up to
    ``n - threshold`` clients may drop after sending masked input. Two thirds is the value
    Bonawitz et al. (2017) analyse against an active server; an explicit threshold must be
    a strict majority (``2 t > n``): with ``t <= n / 2`` a server could tell one half of
    the survivors that ``u`` dropped and the other half that it did not, collect ``t``
    shares of *both* of ``u``'s seeds, and unmask ``u``'s update.
``clip_range = 8.0``
    Each value is clipped to ``[-clip_range, clip_range]`` before quantization. Model
    updates (weights of a network or a GLM) rarely leave that range; statistics sums need
    a larger one.
``quantization_bits = 24`` (8 .. 40)
    A value becomes a signed integer of this many bits: the step is
    ``clip_range / (2 ** (bits - 1) - 1)`` (9.5e-7 with the defaults), and the error of
    one decoded value is at most half a step (see :mod:`fedsilo.privacy.secagg.encoding`).
``modulus_bits = 56`` (32 .. 64, above ``quantization_bits``)
    Arithmetic is mod ``2 ** modulus_bits`` in ``uint64``; the sum of the total weight
    ``W`` of the contributions needs ``W * (2 ** (bits - 1) - 1) < 2 ** (modulus_bits - 1)``,
    checked when decoding: with the defaults ``W`` up to 4.3e9 examples per round (and, at
    ``bits = 40``, 65,536 unit-weight statistics). 56 rather than 64 because a masked value
    then travels in 7 bytes (:func:`~fedsilo.privacy.secagg.encoding.pack`): 1.75 times a
    float32 update instead of 2 (the issue's goal is at most 2 times), while 64 bits would
    only raise the weight limit to 1.1e12 examples.

Errors
------
::

    FedsiloError
    └── SecAggError              the secure aggregation of one round cannot complete
        ├── ThresholdError          fewer than ``threshold`` clients left at some stage
        └── ShareError              a share record is malformed, inconsistent or tampered,
                                    or a request would reveal both seeds of one client
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.errors import ConfigError, FedsiloError

__all__ = ["SecAggError", "SecAggSpec", "ShareError", "ThresholdError"]


class SecAggError(FedsiloError, ValueError):
    """The secure aggregation of one round cannot complete (the reason is in the message)."""


class ThresholdError(SecAggError):
    """Fewer than ``threshold`` clients remain at a stage: the round's sum cannot be
    recovered (and must not be: fewer shares reveal nothing, by design)."""


class ShareError(SecAggError):
    """A share record is malformed or inconsistent with the others (altered on the way or
    by a dishonest client), or an unmask request asks for both seeds of one client."""


class SecAggSpec(BaseModel):
    """``secure_aggregation`` of a model_config (see the module docstring for the defaults).

    Parameters
    ----------
    enabled : bool, default False
    threshold : int >= 2, optional
        Shares needed to recover a seed. Default ``max(2, ceil(2 n / 3))``, at most ``n``.
    clip_range : float > 0, default 8.0
    quantization_bits : int in [8, 40], default 24
    modulus_bits : int in [32, 64], default 56
        Must exceed ``quantization_bits``.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    threshold: int | None = Field(default=None, ge=2)
    clip_range: float = Field(default=8.0, gt=0, allow_inf_nan=False)
    quantization_bits: int = Field(default=24, ge=8, le=40)
    modulus_bits: int = Field(default=56, ge=32, le=64)

    @model_validator(mode="after")
    def _room_for_a_value(self) -> SecAggSpec:
        if self.modulus_bits <= self.quantization_bits:
            raise ValueError(
                f"modulus_bits must exceed quantization_bits ({self.quantization_bits}): a "
                f"sum needs room above one value. Got {self.modulus_bits}."
            )
        return self

    def resolve_threshold(self, n: int) -> int:
        """The threshold for ``n`` participants in the round's first stage.

        Raises
        ------
        ConfigError
            ``n < 2`` (the sum of one client is that client's update), an explicit
            threshold above ``n``, or not a strict majority of ``n``.
        """
        if n < 2:
            raise ConfigError(
                f"Secure aggregation needs at least 2 participants (the sum of one is its "
                f"update). Got {n}."
            )
        if self.threshold is None:
            return min(n, max(2, math.ceil(2 * n / 3)))
        if self.threshold > n:
            raise ConfigError(
                f"The 'threshold' parameter of secure_aggregation must be <= the {n} "
                f"participants of the round. Got {self.threshold}."
            )
        if 2 * self.threshold <= n:
            raise ConfigError(
                f"The 'threshold' parameter of secure_aggregation must be a strict majority "
                f"of the {n} participants (> {n / 2:g}): a smaller one lets the server "
                f"collect both seeds of a client. Got {self.threshold}."
            )
        return self.threshold
