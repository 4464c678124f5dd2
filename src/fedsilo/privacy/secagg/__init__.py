"""Secure aggregation: the server learns only the sum of the clients' vectors.

SecAgg+-style (Bonawitz et al. 2017; Bell et al. 2020): pairwise masks from X25519
agreement, HKDF and a ChaCha20 keystream, a self mask, and Shamir shares of both seeds so
that clients may drop after masking. Pure functions and state machines, no I/O:

* :mod:`~fedsilo.privacy.secagg.spec` -- the ``secure_aggregation`` config and the errors;
* :mod:`~fedsilo.privacy.secagg.encoding` -- fixed-point encoding mod ``2 ** k``, the error
  bound, packing;
* :mod:`~fedsilo.privacy.secagg.prg` -- mask streams and pairwise seeds;
* :mod:`~fedsilo.privacy.secagg.shamir` -- secret sharing of 32-byte seeds;
* :mod:`~fedsilo.privacy.secagg.records` -- the share record and unmask reply layouts;
* :mod:`~fedsilo.privacy.secagg.client` / :mod:`~fedsilo.privacy.secagg.server` -- the
  two sides of one aggregation.

Threat model
------------
*What the server learns.* Without secure aggregation: every client's exact update (or
statistics) every round. With it: for each round, the sum over the clients U3 whose masked
input arrived, of ``w_u * q(x_u)`` and of the weights ``w_u`` (so the total weight, and
with it the total ``num_examples`` of the round, is learned; each client's is not), and
who took part at each stage. Each masked vector alone is uniform mod ``2 ** k``; so is any
sum over a proper subset of U3. The guarantee is against a server that follows the
protocol, and against one that does not as far as these checks go: each client checks
that the key table lists its own mask key and that every peer saw the same table (the
``keys_digest`` in each sealed record), so keys cannot be swapped; that the threshold is a
strict majority; that it answers one unmask request, never revealing both seeds of a
client, nor its own mask key.

*Collusion.* Up to ``t - 1`` clients colluding with the server learn nothing beyond the
sum of the others' inputs (they hold fewer than ``t`` shares of any honest seed). ``t``
or more colluding clients can rebuild an honest client's seeds and its input. With
``t > n / 2`` (enforced), a server cannot split the honest clients into two groups that
each reveal one seed of the same client.

*Dropouts.* A client that drops after sending shares but before its masked input arrives
has its mask key rebuilt; its input never arrived, so nothing of it is revealed (its
pairwise seeds with the others are, and they protect nothing once it is gone; should its
masked input arrive late, its self mask still hides it, as ``b_d`` is never rebuilt). A client
whose masked input arrived but which vanishes at unmask is still unmasked through the
others' shares. More than ``n - t`` dropouts at any stage fail the round
(:class:`ThresholdError`). A round that fails reveals no sum.

*Not covered.* Membership of a round; clipping (values beyond ``clip_range`` are clipped,
which a client cannot hide); a dishonest client's choice of its own input (secure
aggregation hides inputs, it does not check them: robust strategies need individual
updates and refuse the flag); the final model, which is the sum's purpose.
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
