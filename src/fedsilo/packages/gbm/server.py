"""The server half of gbm: federated histogram gradient boosting, one tree per round.

::

    round 0   sketch      -> every client's DDSketch per predictor and its target sum;
                             merged (exactly) into global bin cuts (binning.py) and the
                             baseline: log-odds of the pooled prior, or the pooled mean
              bin         -> clients bin their rows once (and replay the trees of a checkpoint)
    tree t    histograms  -> per frontier node x predictor x bin sums of g, h and counts;
                             summed over clients, split as scikit-learn would (splitting.py);
                             the splits go out with the next request
              update      -> the finished tree; clients add it, evaluate, compute next g, h
              record_round(t), checkpoint(trees so far)

``num_rounds`` is the number of trees. The federated metrics of tree ``t`` are ``loss`` and
``accuracy`` (test-row-weighted means: exactly the pooled values), ``roc_auc_client_mean``
(the clients' ROC AUC, weighted; a rank statistic does not pool), ``r2`` (exact pooled R^2)
and ``train_loss`` (exact pooled training loss). ``save_best_model`` keeps the first ``k``
trees where tree ``k`` scored best (trees are additive, so a prefix is a model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.errors import TaskError
from fedsilo.federation import Participant, Reply, SessionContext
from fedsilo.federation.expect import ReplySpec
from fedsilo.packages.gbm.binning import bin_edges
from fedsilo.packages.gbm.config import GBMDataConfig, GBMModelConfig
from fedsilo.packages.gbm.predictor import Forest
from fedsilo.packages.gbm.splitting import TreeGrower
from fedsilo.workflows import BestModel, PooledMetrics, WeightedMean, client_metrics

__all__ = ["EVALUATE_METRICS", "run"]

#: one tree's federated metrics from the ``update`` replies (see the module docstring)
EVALUATE_METRICS = PooledMetrics(
    weight_key="test_weight_sum",
    extra={"train_loss": lambda: WeightedMean("train_loss", "num_rows")},
)
_PARTS = ("positive_keys", "positive_counts", "negative_keys", "negative_counts")
#: a histograms reply: gradient and hessian sums, which a NaN would turn into a NaN gain
FINITE = ReplySpec(finite=True)


def run(ctx: SessionContext, mc: GBMModelConfig, dc: GBMDataConfig) -> None:
    """Boost ``num_rounds`` trees over the session's clients (see the module docstring).

    Raises
    ------
    TaskError
        When a client fails or replies malformed arrays, or the pooled target leaves the
        baseline undefined (one class only).
    """
    params = mc.model.params
    n_features = len(dc.predictors)
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    checkpoint = ctx.restore()
    best_spec = mc.save_best_model
    # Trees are additive, so the best round's model is the forest's prefix: no arrays kept.
    best = BestModel(
        best_spec.metric if best_spec is not None else None,
        best_spec.resolved_mode() if best_spec is not None else "min",
    )
    if checkpoint is None:
        forest = _initial_forest(ctx, participants, mc, n_features)
        start = 1
    else:
        forest = Forest.from_arrays(checkpoint.arrays, n_features)
        start = checkpoint.round + 1
        best.restore(checkpoint.meta)
    _ask_all(ctx, participants, "bin", forest.to_arrays(), start)
    n_bins = 1 + max(cuts.size for cuts in forest.cuts)

    for server_round in range(start, ctx.session.num_rounds + 1):
        grower = TreeGrower(
            params.learning_rate,
            params.l2_regularization,
            params.min_samples_leaf,
            params.max_depth,
            params.max_leaf_nodes,
        )
        splits = np.zeros((0, 5), dtype=np.int64)
        while not grower.done():
            nodes = grower.pending()
            if nodes:
                arrays = {"splits": splits, "nodes": np.array(nodes, dtype=np.int64)}
                replies = _ask_all(
                    ctx, participants, "histograms", arrays, server_round, expect=FINITE
                )
                grower.add_histograms(nodes, _summed(replies, (len(nodes), n_features, n_bins, 3)))
            splits = np.array(
                [[s.node, s.feature, s.bin, s.left, s.right] for s in grower.next_splits()],
                dtype=np.int64,
            ).reshape(-1, 5)
        tree = grower.arrays()
        forest.trees.append(tree)
        replies = _ask_all(
            ctx, participants, "update", {f"tree/{k}": v for k, v in tree.items()}, server_round
        )
        federated = EVALUATE_METRICS(replies)
        ctx.record_round(server_round, federated=federated, per_client=client_metrics(replies))
        best.update(server_round, federated)
        ctx.checkpoint(server_round, arrays=forest.to_arrays(), meta={"kind": "gbm", **best.meta()})

    n_trees = len(forest.trees)
    kept, metrics, selected_by = best.selected(n_trees)
    model_meta: dict[str, Any] = {
        "round": kept,
        "trees": kept,
        "trees_grown": n_trees,
        "federated_loss": metrics.get("loss"),
        "federated_metrics": metrics,
        "selected_by": selected_by,
        "n_bins": [int(c.size + 1) for c in forest.cuts],
    }
    ctx.save_model(forest.truncated(kept).to_arrays(), meta=model_meta, round=kept)


def _ask_all(
    ctx: SessionContext,
    participants: Sequence[Participant],
    kind: str,
    arrays: dict[str, Any],
    server_round: int,
    meta: dict[str, Any] | None = None,
    expect: ReplySpec | None = None,
) -> list[Reply]:
    # Every histogram must hold every client's rows, or the split is not the pooled one:
    # a failed client fails the session rather than silently shrinking the data.
    return ctx.ask(
        participants,
        kind,
        arrays=arrays,
        meta=meta,
        round=server_round,
        accept_failures=False,
        min_replies=len(participants),
        expect=expect,
    )


def _initial_forest(
    ctx: SessionContext, participants: Sequence[Participant], mc: GBMModelConfig, n_features: int
) -> Forest:
    params = mc.model.params
    accuracy = params.sketch_relative_accuracy
    replies = _ask_all(ctx, participants, "sketch", {}, 0, meta={"relative_accuracy": accuracy})
    sketches = [QuantileSketch(accuracy) for _ in range(n_features)]
    rows, target_sum = 0, 0.0
    for reply in replies:
        who = f"The sketch reply of client {reply.participant.client_name!r}"
        zero_counts = reply.meta.get("zero_counts")
        if not isinstance(zero_counts, list) or len(zero_counts) != n_features:
            raise TaskError(f"{who} must carry meta 'zero_counts', one count per predictor.")
        for j in range(n_features):
            parts = {p: reply.arrays.get(f"sketch/{j}/{p}") for p in _PARTS}
            if any(v is None for v in parts.values()):
                raise TaskError(f"{who} lacks the sketch arrays of predictor {j}.")
            sketches[j].merge(
                QuantileSketch.from_arrays(
                    accuracy, {p: np.asarray(v) for p, v in parts.items()}, int(zero_counts[j])
                )
            )
        rows += int(reply.meta.get("num_rows", 0))
        target_sum += float(reply.meta.get("target_sum", 0.0))
    if rows <= 0:
        raise TaskError("The clients hold no training rows together; gbm needs some.")
    mean = target_sum / rows
    if mc.ml_task.type == "classification":
        if not 0.0 < mean < 1.0:
            raise TaskError(
                f"Every training target of every client is {mean:g}; binary classification "
                "needs rows of both classes."
            )
        baseline = math.log(mean / (1.0 - mean))
    else:
        baseline = mean
    cuts = bin_edges(sketches, params.max_bins)
    ctx.log(
        f"bin cuts from DDSketch(alpha={accuracy:g}) over {rows} rows: "
        f"{min(c.size for c in cuts) + 1}..{max(c.size for c in cuts) + 1} bins per predictor"
    )
    return Forest(baseline, cuts, [])


def _summed(replies: Sequence[Reply], shape: tuple[int, ...]) -> np.ndarray:
    total = np.zeros(shape)
    for reply in replies:
        part = reply.arrays.get("histograms")
        if part is None or np.shape(part) != shape:
            got = "missing" if part is None else f"of shape {np.shape(part)}"
            raise TaskError(
                f"The histograms reply of client {reply.participant.client_name!r} must carry "
                f"array 'histograms' of shape {shape}; it is {got}."
            )
        total += np.asarray(part, dtype=np.float64)
    return total
