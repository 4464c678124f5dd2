"""The server half of eda: two rounds, then the results saved as the session's artifact.

Round 1 (``eda_profile``): every client sends, per column, its dtype and -- for numeric
columns -- a distinct count and a log-bucket quantile sketch. The workflow then decides each
column's kind once for all datasets (categorical when declared, non-numeric anywhere, or at
most ``max_categories`` distinct values everywhere) and, for continuous columns, the agreed
bin edges: equal-width over the pooled range, which is the exact pooled min and max without
DP, and the range of the merged private sketches' released buckets with it.

Round 2 (``eda_summarize``): every client sends counts, moments and the histogram on the
agreed edges (continuous) or value counts (categorical). The workflow joins them with the
round-1 sketches into :class:`~fedsilo.analytics.results.EdaResults` and saves them with
``ctx.save_model``: ``GET /sessions/{sid}/model`` serves them and the SDK's
``session.results()`` reads them. Pooled statistics are not stored: the results merge the
datasets exactly on demand (``results.pooled()``).

Under ``secure_aggregation`` the session runs :mod:`fedsilo.packages.eda.secure_server`
instead: the server learns only sums over every dataset, and the results are pooled only.

The round-1 profiles are checkpointed, so a server restart re-asks round 2 only; clients
answer a repeated task from their first answer, so no budget is spent twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedsilo.analytics.histograms import agreed_edges
from fedsilo.analytics.privacy import Release
from fedsilo.analytics.results import DatasetPrivacy, EdaResults
from fedsilo.analytics.sketch import SKETCH_ARRAYS, QuantileSketch
from fedsilo.analytics.stats import ColumnStats
from fedsilo.errors import TaskError
from fedsilo.federation import Reply, SessionContext
from fedsilo.packages.eda.client import PROFILE, SUMMARIZE
from fedsilo.packages.eda.config import (
    EdaDataConfig,
    EdaModelConfig,
    check_consistency,
    resolved_num_datasets,
)
from fedsilo.wire import Arrays

__all__ = ["agree_columns", "run"]


@dataclass
class Profile:
    """One client's round-1 answer."""

    participant_id: str
    client_name: str
    dataset: str
    columns: list[dict[str, Any]]
    sketches: dict[str, QuantileSketch] = field(default_factory=dict)
    releases: list[Release] = field(default_factory=list)

    def column(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.columns if c["name"] == name), None)


def run(ctx: SessionContext, mc: EdaModelConfig, dc: EdaDataConfig) -> None:
    """Run an EDA session over its clients; see the module docstring.

    Raises
    ------
    ConfigError
        When the configs name no dataset and no ``num_datasets``.
    TaskError
        When a client fails or answers malformed, or two clients bring the same dataset name.
    """
    check_consistency(mc, dc)
    needed = max(ctx.session.min_num_clients, resolved_num_datasets(mc, dc))
    participants = ctx.wait_for_clients(needed)
    if mc.secure:
        # Imported here: the secure workflow builds on this module's parsing.
        from fedsilo.packages.eda.secure_server import run_secure

        run_secure(ctx, mc, dc, participants)
        return

    checkpoint = ctx.restore()
    if checkpoint is not None and checkpoint.round >= 1:
        profiles = _profiles_from_checkpoint(checkpoint.meta, checkpoint.arrays)
    else:
        replies = ctx.ask(participants, PROFILE, meta={}, round=1, accept_failures=False)
        profiles = [_parse_profile(reply) for reply in replies]
        _check_unique(profiles)
        ctx.record_round(
            1,
            federated={"datasets": float(len(profiles))},
            per_client={p.client_name: {"columns": float(len(p.columns))} for p in profiles},
        )
        meta, arrays = _checkpoint_payload(profiles)
        ctx.checkpoint(1, arrays, meta)

    plan, warnings = agree_columns(mc, profiles)
    ctx.log(
        f"agreed {len(plan)} column(s): " + ", ".join(f"{c['name']} ({c['kind']})" for c in plan)
    )
    by_id = {p.participant_id: p for p in profiles}
    asked = [p for p in participants if p.id in by_id]
    replies = ctx.ask(asked, SUMMARIZE, meta={"columns": plan}, round=2, accept_failures=False)
    results = _assemble(mc, dc, profiles, replies, warnings)
    ctx.record_round(
        2,
        federated={"datasets": float(len(results)), "columns": float(len(results.columns))},
        per_client={
            results.client_names[name]: {"epsilon_spent": results.privacy[name].epsilon}
            for name in results.datasets
        },
    )
    meta, arrays = results.to_payload()
    ctx.save_model(arrays, meta, round=2)


def agree_columns(
    mc: EdaModelConfig, profiles: Sequence[Profile]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each column's kind and, for continuous ones, the agreed bin edges.

    Returns
    -------
    plan : list of dict
        ``{"name", "kind", "edges"}`` per column, in order of first appearance.
    warnings : list of str
        Columns for which no range could be agreed (DP suppressed every sketch bucket).
    """
    names = list(dict.fromkeys(c["name"] for p in profiles for c in p.columns))
    plan: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name in names:
        entries = [(p, c) for p in profiles if (c := p.column(name)) is not None]
        few_values = all(
            c.get("distinct") is not None and c["distinct"] <= mc.max_categories for _, c in entries
        )
        categorical = (
            mc.is_declared_categorical(name)
            or not all(c["numeric"] for _, c in entries)
            or (mc.detects_categoricals() and few_values)
        )
        if categorical:
            plan.append({"name": name, "kind": "categorical", "edges": None})
            continue
        if mc.private:
            merged = QuantileSketch(mc.sketch_accuracy())
            for profile, _ in entries:
                if name in profile.sketches:
                    merged.merge(profile.sketches[name])
            low, high = merged.bounds()
        else:
            low = _nan_extreme([c.get("min") for _, c in entries], min)
            high = _nan_extreme([c.get("max") for _, c in entries], max)
        edges = agreed_edges(low, high, mc.bins)
        if edges is None and mc.private:
            warnings.append(
                f"column {name!r}: no sketch bucket passed the privacy threshold in any "
                "dataset, so no range could be agreed and its histogram, mean, std, min, max "
                "and quantiles are unavailable; raise epsilon, analyse fewer columns or "
                "pool more rows"
            )
        plan.append(
            {"name": name, "kind": "continuous", "edges": None if edges is None else edges.tolist()}
        )
    return plan, warnings


# ------------------------------------------------------------------- assembly


def _assemble(
    mc: EdaModelConfig,
    dc: EdaDataConfig,
    profiles: Sequence[Profile],
    replies: Sequence[Reply],
    warnings: list[str],
) -> EdaResults:
    by_id = {p.participant_id: p for p in profiles}
    datasets: dict[str, dict[str, ColumnStats]] = {}
    privacy: dict[str, DatasetPrivacy] = {}
    for reply in replies:
        profile = by_id[reply.participant.id]
        columns, releases = _parse_summary(reply, profile)
        datasets[profile.dataset] = columns
        spent = [*profile.releases, *releases]
        privacy[profile.dataset] = DatasetPrivacy(
            epsilon=math.fsum(r.epsilon for r in spent),
            delta=math.fsum(r.delta for r in spent),
            releases=spent,
        )
    named = [name for name in dc.datasets if name in datasets]
    order = named + [p.dataset for p in profiles if p.dataset not in named]
    notes: list[str] = []
    if not mc.private:
        notes.append(
            "differential privacy was off (epsilon=None): the statistics are exact and min/max "
            "are actual values; use this only with trusted data or for testing"
        )
    elif mc.detects_categoricals():
        notes.append(
            "with differential privacy, columns were classified from noisy distinct counts; "
            "pass categorical=[...] to fix the split and save that share of the budget"
        )
    absent = [name for name in dc.datasets if name not in datasets]
    if absent:
        notes.append(f"dataset(s) named in data_config did not take part: {absent}")
    if mc.private:
        notes += _coverage_warnings(datasets)
    return EdaResults(
        {name: datasets[name] for name in order if name in datasets},
        epsilon=mc.epsilon,
        delta=mc.delta if mc.private else None,
        privacy=privacy,
        warnings=[*notes, *warnings],
        client_names={p.dataset: p.client_name for p in profiles},
    )


#: below this share of rows inside the private range, a column's statistics are flagged
MIN_COVERAGE = 0.9


def _coverage_warnings(datasets: Mapping[str, Mapping[str, ColumnStats]]) -> list[str]:
    """Continuous columns whose private sketch left many rows in suppressed buckets.

    The range comes from the sketch buckets that passed the privacy threshold; rows in the
    suppressed (sparse, usually tail) buckets outside it are clamped into it, which biases the
    mean and shrinks the std. The share in released buckets -- a lower bound of the share
    inside the range -- is estimated from released numbers only: the sketch's released counts
    over the noisy row count.
    """
    inside: dict[str, float] = {}
    total: dict[str, float] = {}
    for columns in datasets.values():
        for name, stats in columns.items():
            if stats.kind != "continuous" or stats.edges is None or stats.sketch is None:
                continue
            inside[name] = inside.get(name, 0.0) + stats.sketch.count
            total[name] = total.get(name, 0.0) + max(stats.moments.count, 0.0)
    warnings = []
    for name, rows in total.items():
        share = min(inside[name] / rows, 1.0) if rows > 0 else 0.0
        if share < MIN_COVERAGE:
            warnings.append(
                f"column {name!r}: only about {share:.0%} of its rows are in sketch buckets "
                "that passed the privacy threshold; its range comes from those buckets and "
                "rows outside it are clamped into it, so its mean, std, min, max, quantiles "
                "and histogram end bins can be biased; raise epsilon, set a coarser "
                "relative_accuracy, or analyse fewer columns"
            )
    return warnings


# ------------------------------------------------------------------- parsing


def _parse_profile(reply: Reply) -> Profile:
    who = reply.participant.client_name
    try:
        meta = reply.meta
        columns = [dict(c) for c in meta["columns"]]
        sketches: dict[str, QuantileSketch] = {}
        for j, column in enumerate(columns):
            sketch_meta = column.get("sketch")
            if sketch_meta is not None:
                sketches[str(column["name"])] = _sketch(reply.arrays, f"c{j}/", sketch_meta)
        return Profile(
            participant_id=reply.participant.id,
            client_name=who,
            dataset=str(meta["dataset_name"]),
            columns=columns,
            sketches=sketches,
            releases=[Release.from_json(r) for r in meta.get("releases", [])],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"client {who!r} sent a malformed {PROFILE!r} reply: {exc!r}") from exc


def _parse_summary(reply: Reply, profile: Profile) -> tuple[dict[str, ColumnStats], list[Release]]:
    who = reply.participant.client_name
    try:
        stats: dict[str, ColumnStats] = {}
        for j, column_meta in enumerate(reply.meta["columns"]):
            column = ColumnStats.from_payload(column_meta, reply.arrays, f"c{j}/")
            first = profile.column(column.name) or {}
            distinct = first.get("distinct")
            stats[column.name] = replace(
                column,
                sketch=profile.sketches.get(column.name) if column.kind == "continuous" else None,
                distinct=math.nan if distinct is None else float(distinct),
            )
        releases = [Release.from_json(r) for r in reply.meta.get("releases", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"client {who!r} sent a malformed {SUMMARIZE!r} reply: {exc!r}") from exc
    if [c["name"] for c in profile.columns] != list(stats):
        raise TaskError(
            f"client {who!r} summarized columns {list(stats)} but profiled "
            f"{[c['name'] for c in profile.columns]}"
        )
    return stats, releases


def _sketch(arrays: Arrays, prefix: str, meta: Mapping[str, Any]) -> QuantileSketch:
    return QuantileSketch.from_arrays(
        float(meta["relative_accuracy"]),
        {key: arrays[f"{prefix}{key}"] for key in SKETCH_ARRAYS if f"{prefix}{key}" in arrays},
        zero_count=int(meta.get("zero_count", 0)),
    )


def _check_unique(profiles: Sequence[Profile]) -> None:
    seen: dict[str, str] = {}
    for profile in profiles:
        if profile.dataset in seen:
            raise TaskError(
                f"clients {seen[profile.dataset]!r} and {profile.client_name!r} both brought "
                f"dataset {profile.dataset!r}; each dataset name may take part once"
            )
        seen[profile.dataset] = profile.client_name


# ---------------------------------------------------------------- checkpoint


def _checkpoint_payload(profiles: Sequence[Profile]) -> tuple[dict[str, Any], Arrays]:
    arrays: Arrays = {}
    entries = []
    for i, profile in enumerate(profiles):
        entries.append(
            {
                "participant_id": profile.participant_id,
                "client_name": profile.client_name,
                "dataset": profile.dataset,
                "columns": profile.columns,
                "releases": [r.to_json() for r in profile.releases],
            }
        )
        for j, column in enumerate(profile.columns):
            sketch = profile.sketches.get(column["name"])
            if sketch is not None:
                for key, value in sketch.to_arrays().items():
                    arrays[f"p{i}/c{j}/{key}"] = value
    return {"profiles": entries}, arrays


def _profiles_from_checkpoint(meta: Mapping[str, Any], arrays: Arrays) -> list[Profile]:
    profiles = []
    for i, entry in enumerate(meta["profiles"]):
        columns = [dict(c) for c in entry["columns"]]
        sketches = {
            str(c["name"]): _sketch(arrays, f"p{i}/c{j}/", c["sketch"])
            for j, c in enumerate(columns)
            if c.get("sketch") is not None
        }
        profiles.append(
            Profile(
                participant_id=str(entry["participant_id"]),
                client_name=str(entry["client_name"]),
                dataset=str(entry["dataset"]),
                columns=columns,
                sketches=sketches,
                releases=[Release.from_json(r) for r in entry.get("releases", [])],
            )
        )
    return profiles


def _nan_extreme(values: Sequence[Any], pick: Any) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(pick(finite)) if finite else math.nan
