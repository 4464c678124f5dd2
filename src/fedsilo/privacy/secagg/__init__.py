"""Secure aggregation: the server learns only the sum of the clients' vectors.

SecAgg+-style (Bonawitz et al. 2017; Bell et al. 2020): pairwise masks from X25519
agreement, HKDF and a ChaCha20 keystream, a self mask, and Shamir shares of both seeds so
that clients may drop after masking. Pure functions and state machines, no I/O:

* :mod:`~fedsilo.privacy.secagg.spec` -- the ``secure_aggregation`` config and the errors;
* :mod:`~fedsilo.privacy.secagg.encoding` -- fixed-point encoding mod ``2 ** k``;
* :mod:`~fedsilo.privacy.secagg.prg` -- mask streams and pairwise seeds;
* :mod:`~fedsilo.privacy.secagg.shamir` -- secret sharing of 32-byte seeds;
* :mod:`~fedsilo.privacy.secagg.client` / :mod:`~fedsilo.privacy.secagg.server` -- the
  two sides of one aggregation.
"""

from __future__ import annotations

from fedsilo.privacy.secagg.client import ClientAggregation
from fedsilo.privacy.secagg.encoding import (
    FixedPoint,
    decode_mean,
    encode_update,
    pack,
    unpack,
)
from fedsilo.privacy.secagg.server import ServerAggregation
from fedsilo.privacy.secagg.spec import SecAggError, SecAggSpec, ShareError, ThresholdError

__all__ = [
    "ClientAggregation",
    "FixedPoint",
    "SecAggError",
    "SecAggSpec",
    "ServerAggregation",
    "ShareError",
    "ThresholdError",
    "decode_mean",
    "encode_update",
    "pack",
    "unpack",
]
