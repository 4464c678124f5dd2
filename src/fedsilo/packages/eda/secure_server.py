"""The server half of eda under secure aggregation: pooled statistics from two secure sums.

With ``model_config["secure_aggregation"]["enabled"]`` the server never sees one dataset's
statistics, only their sums over every dataset (:func:`fedsilo.workflows.secure.secure_sum`;
the client side is :mod:`fedsilo.packages.eda.secure_client`):

1. ``eda_profile`` -- the schema only, in clear: each column's dtype, whether it is numeric,
   whether the session declares it categorical;
2. ``eda_sketch_sum`` (secure sum) -- per possibly continuous column, the quantile sketch on
   a fixed window of buckets (:class:`~fedsilo.analytics.grid.SketchGrid`), how many datasets
   have the column and how many of those have at most ``max_categories`` distinct values.
   A column is categorical when declared, non-numeric anywhere, or (detecting) few-valued
   in every dataset that has it; a continuous one gets bin edges over the pooled sketch's
   range;
3. ``eda_summary_sum`` (secure sum) -- counts and nulls of every column; for continuous
   columns the histogram on the agreed edges and the sums of the values and their squares
   (scaled to the range), from which the pooled mean and variance follow.

The results (:class:`~fedsilo.analytics.results.EdaResults`) hold ONE dataset,
:data:`~fedsilo.analytics.results.POOLED`, and say so in their warnings. What is exact, what
is approximate, what is omitted:

* counts, nulls and histogram bins: exact (integers of at most ``2 ** (quantization_bits -
  1) - 1`` a dataset, else the session fails naming the field);
* mean: within ``n h / (2 L)`` and variance within ``3 n h**2 N / (2 L (N - 1))`` of the
  pooled values (``n`` datasets, ``h`` half the range's width, ``N`` the pooled count, ``L =
  2 ** (quantization_bits - 1) - 1``: 1.2e-6 for ``n = 2``, ``h = 10`` and 24 bits);
* quantiles: from the pooled sketch, coarsened to ``policy.min_count`` on the server, with
  the exact sketch's guarantee (within ``relative_accuracy``, relatively);
* min and max: the outer edges of the pooled sketch's extreme buckets, not actual values
  (``min <= true min`` within a factor ``(1 + alpha) / (1 - alpha)``, likewise max);
* omitted: every per-dataset statistic; categorical value counts, unique, top and freq
  (they need the categories each dataset holds, a data-dependent set a fixed-length secure
  sum cannot carry); distinct counts.

With differential privacy (``epsilon`` set; ``categorical`` must then be declared,
:data:`fedsilo.config.secure.EDA_DP_REASON`) every dataset noises what it sends before
masking (:mod:`fedsilo.packages.eda.secure_client`) and the pooled results are noisy as the
sum of the datasets' noises: the range comes from the pooled sketch buckets above a noise
threshold (:func:`_released_buckets`), the quantiles from the pooled noisy grid (with the
intervals of :mod:`fedsilo.analytics.quantiles`), the privacy report gives the most any
dataset spent (each dataset's ledger stays on its client), and delta is 0 (fixed grids only).

Without DP, histogram bins below ``policy.min_count`` are withheld from the pooled histogram (the
server process holds the pooled sums in memory while it assembles the results; nothing of
one dataset reaches it). The session is not checkpointed: a restarted server starts over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsilo.analytics.describe import Moments
from fedsilo.analytics.grid import LARGEST, SketchGrid
from fedsilo.analytics.histograms import agreed_edges, withhold_small
from fedsilo.analytics.privacy import CONTINUOUS_SHARES
from fedsilo.analytics.results import POOLED, DatasetPrivacy, EdaResults
from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.analytics.stats import ColumnStats
from fedsilo.errors import TaskError
from fedsilo.federation import Participant, SessionContext
from fedsilo.packages.eda.client import PROFILE
from fedsilo.packages.eda.config import EdaDataConfig, EdaModelConfig
from fedsilo.packages.eda.secure_client import SKETCH_SUM, SUMMARY_SUM
from fedsilo.packages.eda.server import (
    Profile,
    _check_unique,
    _coverage_warnings,
    _parse_profile,
)
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.encoding import FixedPoint
from fedsilo.workflows.secure import SecureSum, secure_sum

__all__ = ["POOLED_ONLY", "run_secure"]

#: the first warning of a secure session's results
POOLED_ONLY = (
    "secure aggregation: the server learned only the sums over every dataset, so these "
    "results hold the pooled dataset only (no per-dataset statistics); min and max are the "
    "outer edges of the pooled quantile sketch's extreme buckets, not actual values; "
    "categorical columns have count and nulls only (value counts, unique, top and freq need "
    "each dataset's categories)"
)


def run_secure(
    ctx: SessionContext,
    mc: EdaModelConfig,
    dc: EdaDataConfig,
    participants: Sequence[Participant],
) -> None:
    """Run a secure eda session over ``participants`` (see the module docstring).

    Raises
    ------
    TaskError
        A failed client or stage (every dataset must take part), two clients with one dataset
        name, or a count too large for ``quantization_bits``.
    """
    spec = mc.secure_aggregation
    replies = ctx.ask(participants, PROFILE, meta={}, round=1, accept_failures=False)
    profiles = [_parse_profile(reply) for reply in replies]
    _check_unique(profiles)
    asked = [p for p in participants if p.id in {q.participant_id for q in profiles}]
    levels = FixedPoint.from_spec(spec).max_level
    # One level per count: integers are summed exactly.
    scale = spec.clip_range / levels

    candidates = _candidates(mc, profiles)
    grid = SketchGrid(mc.sketch_accuracy())
    sketches: dict[str, QuantileSketch] = {}
    kinds: dict[str, str] = {}
    warnings: list[str] = []
    if candidates:
        like = {}
        for j in range(len(candidates)):
            like[f"c{j}/sketch"] = np.zeros(grid.size)
            like[f"c{j}/profile"] = np.zeros(3)
        summed = secure_sum(
            ctx, asked, SKETCH_SUM, {"columns": candidates}, {}, like, spec, scale=scale, round=1
        )
        _check_clipped(summed, spec, SKETCH_SUM)
        for j, name in enumerate(candidates):
            has, few, outside = (int(v) for v in np.rint(summed.arrays[f"c{j}/profile"]))
            if mc.detects_categoricals() and has > 0 and few == has:
                kinds[name] = "categorical"
                continue
            kinds[name] = "continuous"
            dense = summed.arrays[f"c{j}/sketch"]
            if mc.private:
                dense = _released_buckets(dense, _scales(summed, name, "sketch"), grid.size)
            sketches[name] = grid.sketch(dense)
            if outside:
                warnings.append(
                    f"column {name!r}: {outside} value(s) beyond +-{LARGEST:g} were counted at "
                    "the edge of the secure sketch's window; its min, max, quantiles and "
                    "histogram end bins are not to be trusted"
                )
    ctx.record_round(
        1,
        federated={"datasets": float(len(profiles))},
        per_client={p.client_name: {"columns": float(len(p.columns))} for p in profiles},
    )

    plan = _plan(mc, profiles, kinds, sketches)
    ctx.log(
        "secure aggregation: agreed "
        f"{len(plan)} column(s): " + ", ".join(f"{c['name']} ({c['kind']})" for c in plan)
    )
    like = {}
    norms: dict[str, int] = {}
    for j, column in enumerate(plan):
        like[f"c{j}/counts"] = np.zeros(2)
        if column["kind"] == "continuous" and column["edges"] is not None:
            like[f"c{j}/histogram"] = np.zeros(len(column["edges"]) - 1)
            like[f"c{j}/sums"] = np.zeros(2)
            if mc.private:
                like[f"c{j}/grid"] = np.zeros(mc.quantile_bins)
            norms[column["name"]] = _norm(mc, profiles, sketches[column["name"]].count)
        elif column["kind"] == "continuous" and mc.private:
            warnings.append(
                f"column {column['name']!r}: no sketch bucket passed the privacy threshold, "
                "so no range could be agreed and its histogram, mean, std, min, max and "
                "quantiles are unavailable; raise epsilon, analyse fewer columns or pool "
                "more rows"
            )
    meta = {"columns": plan, "norms": norms, "levels": levels}
    first = summed.clear if candidates else {}
    summed = secure_sum(ctx, asked, SUMMARY_SUM, meta, {}, like, spec, scale=scale, round=2)
    _check_clipped(summed, spec, SUMMARY_SUM)

    columns = {
        column["name"]: _pooled_column(mc, profiles, column, j, summed, sketches, norms, levels)
        for j, column in enumerate(plan)
    }
    absent = [name for name in dc.datasets if name not in {p.dataset for p in profiles}]
    notes = [POOLED_ONLY]
    if mc.private:
        notes.append(
            "differential privacy: every dataset noised each count, bucket, bin and sum before "
            "masking; quantiles come from the pooled noisy grid, the range from the pooled "
            "sketch buckets above a noise threshold"
        )
        notes += _coverage_warnings({POOLED: columns})
    if absent:
        notes.append(f"dataset(s) named in data_config did not take part: {absent}")
    spent = [
        float(first.get(p.client_name, {}).get("epsilon_spent", 0.0))
        + float(summed.clear.get(p.client_name, {}).get("epsilon_spent", 0.0))
        for p in profiles
    ]
    results = EdaResults(
        {POOLED: columns},
        epsilon=mc.epsilon,
        delta=0.0 if mc.private else None,
        # The most any dataset spent (each dataset's ledger stays on its client).
        privacy={POOLED: DatasetPrivacy(epsilon=max(spent, default=0.0))},
        warnings=[*notes, *warnings],
        client_names={POOLED: "secure sum of " + ", ".join(p.client_name for p in profiles)},
    )
    ctx.record_round(
        2,
        federated={"datasets": float(len(profiles)), "columns": float(len(columns))},
        per_client={},
    )
    payload_meta, arrays = results.to_payload()
    ctx.save_model(arrays, payload_meta, round=2)


def _candidates(mc: EdaModelConfig, profiles: Sequence[Profile]) -> list[str]:
    """Columns that may be continuous: numeric in every dataset that has them, undeclared."""
    names = list(dict.fromkeys(c["name"] for p in profiles for c in p.columns))
    return [
        name
        for name in names
        if not mc.is_declared_categorical(name)
        and all(c["numeric"] for p in profiles if (c := p.column(name)) is not None)
    ]


def _plan(
    mc: EdaModelConfig,
    profiles: Sequence[Profile],
    kinds: dict[str, str],
    sketches: dict[str, QuantileSketch],
) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(c["name"] for p in profiles for c in p.columns))
    plan: list[dict[str, Any]] = []
    for name in names:
        if kinds.get(name, "categorical") == "categorical":
            plan.append({"name": name, "kind": "categorical", "edges": None})
            continue
        low, high = sketches[name].bounds()
        edges = agreed_edges(low, high, mc.bins)
        plan.append(
            {"name": name, "kind": "continuous", "edges": None if edges is None else edges.tolist()}
        )
    return plan


def _pooled_column(
    mc: EdaModelConfig,
    profiles: Sequence[Profile],
    column: dict[str, Any],
    j: int,
    summed: SecureSum,
    sketches: dict[str, QuantileSketch],
    norms: dict[str, int],
    levels: int,
) -> ColumnStats:
    name = column["name"]
    dtypes = {str(c["dtype"]) for p in profiles if (c := p.column(name)) is not None}
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    count, nulls = (float(v) for v in np.rint(summed.arrays[f"c{j}/counts"]))
    if column["kind"] == "categorical":
        return ColumnStats(name, "categorical", dtype, Moments(count=count, nulls=nulls))
    if column["edges"] is None:
        return ColumnStats(name, "continuous", dtype, Moments(count=count, nulls=nulls))
    edges = np.asarray(column["edges"], dtype=np.float64)
    low, high = float(edges[0]), float(edges[-1])
    center, half = (low + high) / 2.0, (high - low) / 2.0
    # Back from levels to sums of y = (x - centre) / half, then to sums of x - centre.
    sum_y, sum_y2 = summed.arrays[f"c{j}/sums"] * (norms[name] / levels)
    moments = Moments.from_sums(
        count, nulls, float(sum_y * half), float(sum_y2 * half * half), center, (low, high)
    )
    counts = np.rint(summed.arrays[f"c{j}/histogram"]).astype(np.int64)
    if mc.private:
        grid_edges = agreed_edges(low, high, mc.quantile_bins)
        return ColumnStats(
            name,
            "continuous",
            dtype,
            moments,
            sketch=sketches[name],
            edges=edges,
            # Negative noisy bins raised to 0: post-processing, as a silo's own release.
            histogram=np.maximum(counts, 0).astype(np.float64),
            quantile_edges=grid_edges,
            quantile_counts=np.rint(summed.arrays[f"c{j}/grid"]),
            quantile_scales=tuple(_scales(summed, name, "quantiles")),
        )
    released, withheld = withhold_small(counts, mc.policy.min_count)
    return ColumnStats(
        name,
        "continuous",
        dtype,
        moments,
        sketch=sketches[name].coarsened(mc.policy.min_count),
        edges=edges,
        histogram=released,
        withheld=withheld,
    )


#: the chance that some empty bucket of the pooled noisy sketch passes the threshold
SKETCH_FAILURE = 1e-3


def _scales(summed: SecureSum, column: str, statistic: str) -> list[float]:
    """Each contributor's noise scale of ``statistic`` of ``column`` (clear meta)."""
    scales = []
    for meta in summed.clear.values():
        entry = meta.get("noise_scales", {}).get(column, {})
        if statistic in entry:
            scales.append(float(entry[statistic]))
    return scales


def _released_buckets(dense: np.ndarray, scales: Sequence[float], size: int) -> np.ndarray:
    """The pooled noisy sketch with every bucket below the threshold set to 0.

    The threshold ``sum_u (b_u ln(2 n size / beta) + 1)`` bounds the sum of the datasets'
    discrete Laplace noises (scales ``b_u``) on every bucket at once with probability
    ``1 - beta`` (a union bound over the ``n`` datasets and ``size`` buckets; beta =
    :data:`SKETCH_FAILURE`): an empty bucket then does not pass, so the range comes from
    buckets that hold rows. Post-processing of the noisy sums: no further privacy cost.
    """
    n = max(len(scales), 1)
    threshold = sum(b * math.log(2 * n * size / SKETCH_FAILURE) + 1.0 for b in scales)
    kept: np.ndarray = np.where(dense >= threshold, np.rint(dense), 0.0)
    return kept


def _norm(mc: EdaModelConfig, profiles: Sequence[Profile], count: int) -> int:
    """The bound of a dataset's sum of range-scaled values (see secure_client): the pooled
    count, and under DP twice the noisy one plus room for 40 noise scales of the sums."""
    if not mc.private:
        return count
    assert mc.epsilon is not None
    smallest = min(mc.epsilon / max(len(p.columns), 1) for p in profiles)
    # A sum of values scaled to [-1, 1] has sensitivity 1, so its noise scale is 1 / epsilon.
    return int(
        2 * max(count, 1)
        + 40 / (smallest * min(CONTINUOUS_SHARES["sum"], CONTINUOUS_SHARES["sum_squares"]))
    )


def _check_clipped(summed: SecureSum, spec: SecAggSpec, kind: str) -> None:
    """A clipped value is a count above the fixed point's largest level: refuse the result."""
    clipped = [
        name
        for name, meta in summed.clear.items()
        if isinstance(meta.get("secagg_clipped"), int) and meta["secagg_clipped"] > 0
    ]
    if clipped:
        largest = (1 << (spec.quantization_bits - 1)) - 1
        raise TaskError(
            f"The secure sum of {kind!r} lost values: client(s) {clipped} hold a count above "
            f"{largest} (2^(quantization_bits - 1) - 1 with quantization_bits="
            f"{spec.quantization_bits}); raise model_config secure_aggregation."
            "quantization_bits (at most 40)."
        )
