"""Secure aggregation on the round loop, with in-process clients (real crypto, the wire codec
and each client's own mod chain).

The secure run must equal the plain run within the quantization error the docs state
(:mod:`fedsilo.privacy.secagg.encoding`: the decoded weighted mean is within
``clip_range / (2 ** bits - 2)`` of the plain one, 4.8e-7 with the defaults), for FedAvg,
iter_avg and a server optimizer, for ffnet and glm ``sgd``; clients that drop after sending
masked input (1 of 3, 3 of 10) leave the mean of the others; fewer than the threshold, or a
failure under ``accept_failures = false``, fail the round naming the stage; nothing a client
stores or the server receives holds a client's unmasked update.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.client.mods import Handler, TaskReply, TaskRequest
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Failure, Outcome, Task, TaskGroup, get_package
from fedsilo.packages.ffnet import FFNetExecutor
from fedsilo.packages.glm import GLMExecutor
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.encoding import FixedPoint
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays, DatasetSummary
from fedsilo.workflows import RoundPlan, Start, run_rounds
from fedsilo.workflows.secure import KEYS, MASKED_ARRAY, UNMASK, secure_mean

torch.set_num_threads(1)

SECURE = {"secure_aggregation": {"enabled": True}}
#: the stated bound on the decoded mean (defaults: clip_range 8, 24 bits)
BOUND = FixedPoint(24, 8.0).error_bound(1)
INITIAL = {"w": np.zeros(3, dtype=np.float32)}


class Client:
    """Fits halfway toward ``target`` (closed-form rounds); records every fit reply."""

    def __init__(self, target: float, rows: int) -> None:
        self.target = np.full(3, target, dtype=np.float32)
        self.rows = rows
        self.fitted: list[Arrays] = []

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        assert "secagg" not in meta  # the mod hides the protocol from the executor
        w = arrays["w"]
        loss = float(np.mean((w - self.target) ** 2))
        if kind == "fit":
            out = {"w": (w + self.target) / 2}
            self.fitted.append(out)
            return {"num_examples": self.rows, "train_loss": loss}, out
        return {"test_loss": loss, "test_num_examples": self.rows, "evaluated_on": "test"}, {}


class Recording:
    """An executor wrapper that keeps what the executor itself answered to each fit."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.fitted: list[Arrays] = []

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        out_meta, out = self.executor.handle(kind, meta, arrays)
        if kind == "fit":
            self.fitted.append({k: np.array(v) for k, v in out.items()})
        return out_meta, out


class Killing(InProcessContext):
    """Clients named in ``killed`` stop answering once the kind ``from_kind`` is sent (as a
    process killed after its masked input): those tasks, and all later ones, time out."""

    def __init__(self, *args: Any, killed: Sequence[str], from_kind: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.killed = set(killed)
        self.from_kind = from_kind
        self.dead = False

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        if tasks and tasks[0].kind == self.from_kind:
            self.dead = True
        gone = [t for t in tasks if self.dead and t.to.client_name in self.killed]
        live = [t for t in tasks if t not in gone]
        outcomes: list[Outcome] = list(super().send(live).outcomes()) if live else []
        outcomes += [
            Failure(t.to, t.kind, t.round, "timeout", "no reply within 60 s") for t in gone
        ]
        futures: list[Future[Outcome]] = []
        for outcome in outcomes:
            future: Future[Outcome] = Future()
            future.set_result(outcome)
            futures.append(future)
        return TaskGroup([*live, *gone], futures, expire=lambda *_: False)


def declared(clients: dict[str, Any]) -> dict[str, DatasetSummary]:
    return {
        name: DatasetSummary(train_rows=c.rows, test_rows=c.rows, columns=[])
        for name, c in clients.items()
    }


def toy(n: int) -> dict[str, Client]:
    return {f"c{i}": Client(float(i), 10 * (i + 1)) for i in range(n)}


def plan(name: str = "FedAvg", **params: Any) -> RoundPlan:
    return RoundPlan(
        strategy=get_strategy(name, params), start=lambda _: Start(dict(INITIAL)), seed=1
    )


def halfway_mean(clients: dict[str, Client], weights: dict[str, float]) -> np.ndarray:
    """One round from zeros: each client is at target / 2; their weighted mean."""
    total = sum(weights.values())
    return sum(weights[n] * clients[n].target / 2 for n in weights) / total  # type: ignore[return-value]


# ------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("strategy", ["FedAvg", "iter_avg", "FedProx"])
def test_one_secure_round_is_the_plain_mean_within_the_stated_error(strategy: str) -> None:
    clients = toy(3)
    params = {"proximal_mu": 0.1} if strategy == "FedProx" else {}
    ctx = InProcessContext(clients, 1, model_config=SECURE, datasets=declared(clients))
    result = run_rounds(ctx, plan(strategy, **params))

    weights = {n: 1.0 if strategy == "iter_avg" else c.rows for n, c in clients.items()}
    expected = halfway_mean(clients, weights)
    np.testing.assert_allclose(result.arrays["w"], expected, rtol=0, atol=BOUND + 2.5e-7)
    assert result.arrays["w"].dtype == np.float32
    kinds = [kind for kind, _, _ in ctx.asked]
    assert kinds == [KEYS, "secagg.shares", "secagg.deliver", "fit", UNMASK, "evaluate"]
    federated, per_client = ctx.rounds[1]
    assert "train_loss" not in federated  # not released under secure aggregation
    assert all("train_loss" not in metrics for metrics in per_client.values())


def test_a_server_optimizer_steps_from_the_secure_mean() -> None:
    params = {"eta": 0.5, "tau": 1e-3}
    runs = {}
    for secure in (False, True):
        clients = toy(3)
        ctx = InProcessContext(
            clients, 3, model_config=SECURE if secure else {}, datasets=declared(clients)
        )
        runs[secure] = run_rounds(ctx, plan("FedAdam", **params)).arrays["w"]
    # Three rounds of Adam steps; each mean is within BOUND, the steps barely amplify it.
    np.testing.assert_allclose(runs[True], runs[False], rtol=0, atol=1e-5)
    assert not np.allclose(runs[False], 0.0)


@pytest.mark.parametrize(("n", "killed"), [(3, ["c1"]), (10, ["c2", "c5", "c9"])])
def test_clients_killed_after_their_masked_input_are_still_in_the_sum(
    n: int, killed: list[str]
) -> None:
    clients = toy(n)
    ctx = Killing(
        clients,
        1,
        model_config=SECURE,
        datasets=declared(clients),
        killed=killed,
        from_kind=UNMASK,
    )
    result = run_rounds(ctx, plan())

    # Their masked input arrived; the others' shares of their self masks remove those.
    everyone = {name: float(c.rows) for name, c in clients.items()}
    np.testing.assert_allclose(
        result.arrays["w"], halfway_mean(clients, everyone), rtol=0, atol=BOUND + 2.5e-7
    )
    assert f"task 'secagg.unmask' failed: {killed[0]}: no reply" in "\n".join(ctx.logs)


@pytest.mark.parametrize(("n", "killed"), [(3, ["c1"]), (10, ["c2", "c5", "c9"])])
def test_clients_killed_after_sharing_their_seeds_leave_the_mean_of_the_others(
    n: int, killed: list[str]
) -> None:
    clients = toy(n)
    ctx = Killing(
        clients,
        1,
        model_config=SECURE,
        datasets=declared(clients),
        killed=killed,
        from_kind="fit",
    )
    result = run_rounds(ctx, plan())

    # Their pairwise masks are rebuilt from the shares of their mask keys and removed.
    survivors = {name: float(c.rows) for name, c in clients.items() if name not in killed}
    np.testing.assert_allclose(
        result.arrays["w"], halfway_mean(clients, survivors), rtol=0, atol=BOUND + 2.5e-7
    )
    assert all(len(clients[name].fitted) == 0 for name in killed)
    assert any(f"without {len(killed)} client(s) that dropped" in line for line in ctx.logs)


def test_below_the_threshold_the_round_fails_naming_the_stage() -> None:
    clients = toy(3)  # threshold 2 of 3
    ctx = Killing(
        clients,
        1,
        model_config=SECURE,
        datasets=declared(clients),
        killed=["c0", "c2"],
        from_kind=UNMASK,
    )
    with pytest.raises(TaskError, match=re.escape("stopped at task 'secagg.unmask'")) as e:
        run_rounds(ctx, plan())
    assert "1 client(s) left; the threshold of 2 needed" in str(e.value)
    assert "c0: no reply within 60 s" in str(e.value)
    assert ctx.saved is None


def test_one_failure_under_accept_failures_false_fails_the_round() -> None:
    clients = toy(3)
    ctx = Killing(
        clients, 1, model_config=SECURE, datasets=declared(clients), killed=["c1"], from_kind=KEYS
    )
    with pytest.raises(
        TaskError, match=re.escape("'secagg.keys' failed and accept_failures is false")
    ):
        run_rounds(ctx, plan(accept_failures=False))


def test_min_fit_clients_counts_the_masked_inputs() -> None:
    clients = toy(4)  # threshold 3 of 4; 3 masked inputs arrive, 4 are required
    ctx = Killing(
        clients,
        1,
        model_config=SECURE,
        datasets=declared(clients),
        killed=["c3"],
        from_kind="fit",
    )
    with pytest.raises(TaskError, match=re.escape("3 client(s) left; min_fit_clients=4 needed")):
        run_rounds(ctx, plan(min_fit_clients=4))


def test_no_stored_reply_and_nothing_the_server_got_holds_an_unmasked_update(
    tmp_path: Path,
) -> None:
    # Targets away from 0: a client at 0 sends an all-zero update, whose 12 zero bytes turn
    # up by chance in any binary file (a length field, padding).
    clients = {f"c{i}": Client(float(i) + 0.37, 10 * (i + 1)) for i in range(3)}
    ctx = InProcessContext(
        clients, 2, model_config=SECURE, datasets=declared(clients), state_dir=tmp_path
    )
    run_rounds(ctx, plan())

    updates = [u["w"].tobytes() for c in clients.values() for u in c.fitted]
    assert len(updates) == 6
    # every reply each client released (its release-once store) is the masked one
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert stored and not [u for u in updates if u in stored]
    # what the server kept: checkpoints, the saved model, rounds, logs
    kept = [a.tobytes() for cp in ctx.checkpoints.values() for a in cp.arrays.values()]
    assert ctx.saved is not None
    kept += [a.tobytes() for a in ctx.saved[0].values()]
    kept.append(repr(ctx.rounds).encode() + "\n".join(ctx.logs).encode())
    assert not [u for u in updates for blob in kept if u in blob]


# ----------------------------------------------------------------- real packages


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames(seed=0)


FFNET: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "seed": 23,
}


def ffnet_run(
    frames: dict[str, pd.DataFrame], config: dict[str, Any], rounds: int
) -> tuple[InProcessContext, dict[str, Recording]]:
    package = get_package("ffnet")
    mc, dc = package.parse_configs(config, {"predictors": FEATURES, "target": "y"})
    train, test = frames["train_silo0"], frames["test"]
    cuts = [(0, 1500), (1500, 2500), (2500, 5000)]
    executors = {
        f"silo{i}": Recording(
            FFNetExecutor(mc, dc, LocalDataset(train.iloc[a:b], test.iloc[:500], 256))
        )
        for i, (a, b) in enumerate(cuts)
    }
    sizes = {f"silo{i}": b - a for i, (a, b) in enumerate(cuts)}
    summaries = {
        n: DatasetSummary(train_rows=r, test_rows=500, columns=[]) for n, r in sizes.items()
    }
    ctx = InProcessContext(executors, rounds, model_config=config, datasets=summaries)
    package.workflow(ctx, mc, dc)
    return ctx, executors


def test_ffnet_secure_equals_plain_within_the_quantization_error(
    frames: dict[str, pd.DataFrame],
) -> None:
    plain, _ = ffnet_run(frames, FFNET, 1)
    secure, executors = ffnet_run(frames, {**FFNET, **SECURE}, 1)
    assert plain.saved is not None and secure.saved is not None
    for name, value in plain.saved[0].items():
        got = secure.saved[0][name]
        # the decoded mean within BOUND, then one float32 rounding of each
        slack = BOUND + 2 * float(np.spacing(np.float32(np.abs(value).max())))
        np.testing.assert_allclose(got, value, rtol=0, atol=slack, err_msg=name)
    assert secure.rounds[1][0]["loss"] == pytest.approx(plain.rounds[1][0]["loss"], abs=1e-5)
    # the updates exist (the model moved) and none reached the server's rounds or logs
    assert all(len(r.fitted) == 1 for r in executors.values())


def test_ffnet_secure_tracks_plain_over_rounds_under_fedadam(
    frames: dict[str, pd.DataFrame],
) -> None:
    config = {**FFNET, "strategy": {"name": "FedAdam", "params": {"eta": 0.05}}}
    plain, _ = ffnet_run(frames, config, 3)
    secure, _ = ffnet_run(frames, {**config, **SECURE}, 3)
    for r in (1, 2, 3):
        assert secure.rounds[r][0]["loss"] == pytest.approx(plain.rounds[r][0]["loss"], abs=1e-4)


def test_glm_sgd_secure_equals_plain_within_the_quantization_error() -> None:
    rng = np.random.default_rng(3)
    frames = []
    for n in (300, 900, 1800):
        x = rng.normal(size=(n, 3))
        y = rng.binomial(1, 1 / (1 + np.exp(-(x @ [0.5, -0.3, 0.2] + 0.1)))).astype(float)
        frames.append(pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": y}))
    config: dict[str, Any] = {
        # one start for both (the secure session has no intercept-only start: it would need
        # each silo's target sums)
        "strategy": {"name": "FedAvg", "params": {"initial_parameters": {"beta": [0.2] * 4}}},
        "model": {"params": {"input_size": 3}},
        "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
        "solver": "sgd",
    }
    data = {"predictors": ["x0", "x1", "x2"], "target": "y"}
    package = get_package("glm")
    betas = {}
    for secure in (False, True):
        raw = {**config, **SECURE} if secure else config
        mc, dc = package.parse_configs(raw, data)
        executors = {
            f"silo{i}": GLMExecutor(mc, dc, LocalDataset(f, None, 128))
            for i, f in enumerate(frames)
        }
        summaries = {
            f"silo{i}": DatasetSummary(train_rows=len(f), test_rows=0, columns=[])
            for i, f in enumerate(frames)
        }
        ctx = InProcessContext(executors, 1, model_config=raw, datasets=summaries)
        package.workflow(ctx, mc, dc)
        assert ctx.saved is not None
        betas[secure] = ctx.saved[0]["beta"]
    np.testing.assert_allclose(betas[True], betas[False], rtol=0, atol=BOUND + 1e-12)
    assert betas[True].dtype == np.float64
    # no silo's exact target sums in clear: the secure session asks no target_summary
    assert [kind for kind, _, _ in ctx.asked][:2] == ["secagg.keys", "secagg.shares"]


# ------------------------------------------------------------------ the config


@pytest.mark.parametrize(
    ("package", "raw", "reason"),
    [
        ("ffnet", {**FFNET, "strategy": {"name": "FedMedian"}}, "coordinate-wise median"),
        ("ffnet", {**FFNET, "strategy": {"name": "fedtrimmedavg"}}, "trims the extreme"),
        (
            "ffnet",
            {**FFNET, "strategy": {"name": "FedClippedAvg", "params": {"clip_norm": 1}}},
            "clips each client's update",
        ),
        ("gbm", {}, "gradient histograms"),
        ("eda", {"epsilon": 1.0}, "needs model_config categorical"),
    ],
)
def test_the_flag_is_refused_at_parse_time_naming_why(
    package: str, raw: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ConfigError, match="secure_aggregation") as e:
        get_package(package).parse_model_config({**raw, **SECURE})
    assert reason in str(e.value)


def test_the_flag_and_its_fields_are_accepted_and_validated() -> None:
    ffnet = get_package("ffnet")
    spec = {"enabled": True, "threshold": 3, "clip_range": 2.0, "quantization_bits": 32}
    mc = ffnet.parse_model_config({**FFNET, "secure_aggregation": spec})
    assert mc.secure_aggregation.threshold == 3 and mc.secure_aggregation.clip_range == 2.0
    # disabled: any package may carry the default-off section's schema check only
    get_package("glm").parse_model_config(
        {
            "model": {"params": {"input_size": 3}},
            "ml_task": {"type": "normal", "params": {"alpha": 0, "l1_ratio": 0}},
            "secure_aggregation": {"enabled": False},
        }
    )
    with pytest.raises(ConfigError, match="quantization_bits"):
        ffnet.parse_model_config({**FFNET, "secure_aggregation": {"quantization_bits": 64}})
    with pytest.raises(ConfigError, match=r"Extra inputs"):
        ffnet.parse_model_config({**FFNET, "secure_aggregation": {"enabled": True, "k": 1}})
    for dp in (None, {"epsilon": 4, "max_grad_norm": 1}):
        raw = {**FFNET, **SECURE}
        if dp:
            raw["differential_privacy_params"] = dp
        ffnet.parse_model_config(raw)  # DP-SGD noises each update locally: allowed


def test_the_masked_reply_is_one_uint64_vector_and_no_clear_count() -> None:
    clients = toy(3)
    seen: list[Any] = []

    class Watching(InProcessContext):
        def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
            group = super().send(tasks)
            if tasks and tasks[0].kind == "fit":
                outcomes = list(group.outcomes())
                seen.extend(outcomes)
                futures: list[Future[Outcome]] = []
                for outcome in outcomes:
                    future: Future[Outcome] = Future()
                    future.set_result(outcome)
                    futures.append(future)
                return TaskGroup(list(tasks), futures, expire=lambda *_: False)
            return group

    ctx = Watching(clients, 1, model_config=SECURE, datasets=declared(clients))
    run_rounds(ctx, plan())
    assert len(seen) == 3
    for reply in seen:
        assert list(reply.arrays) == [MASKED_ARRAY]
        assert reply.arrays[MASKED_ARRAY].dtype == np.uint8
        assert reply.arrays[MASKED_ARRAY].shape == (4 * 7,)  # (3 values + weight) * 56 bits
        assert set(reply.meta) == {"secagg_clipped"}  # no num_examples, no train_loss


def test_dp_sgd_under_secure_aggregation_keeps_each_clients_spending(
    frames: dict[str, pd.DataFrame],
) -> None:
    config = {**FFNET, **SECURE, "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 1}}
    ctx, _ = ffnet_run(frames, config, 1)
    assert ctx.saved is not None
    spent = ctx.saved[1]["privacy"]["epsilon_spent"]
    assert set(spent) == {"silo0", "silo1", "silo2"}
    assert all(0 < value <= 4 + 1e-9 for value in spent.values())
    assert ctx.rounds[1][1]["silo0"]["epsilon_spent"] == spent["silo0"]


def test_a_second_sum_of_a_round_over_another_set_of_clients_is_refused() -> None:
    clients = toy(4)
    ctx = InProcessContext(clients, 1, model_config=SECURE, datasets=declared(clients))
    spec = SecAggSpec(enabled=True)
    everyone = ctx.participants()
    meta = {"round": 1}
    first = secure_mean(ctx, everyone, dict(INITIAL), meta, spec, round=1)
    assert first.weight == sum(c.rows for c in clients.values())
    # the same round again over the same clients (a server restarted mid-round): every
    # stage is the same question, answered from the release-once store -- the same sum
    again = secure_mean(ctx, everyone, dict(INITIAL), meta, spec, round=1)
    np.testing.assert_allclose(again.arrays["w"], first.arrays["w"], rtol=0, atol=1e-12)
    assert len(ctx.replayed) == 5 * 4 and all(len(c.fitted) == 1 for c in clients.values())
    # ... but over 3 of them the difference would be c3's update: the clients refuse
    with pytest.raises(TaskError, match=re.escape("stopped at task 'fit': 0 client(s)")) as e:
        secure_mean(ctx, everyone[:3], dict(INITIAL), meta, spec, round=1)
    assert "would let the server subtract the two sums" in str(e.value)


def test_a_garbage_mask_key_is_one_failed_client_not_a_failed_round() -> None:
    clients = toy(4)
    corrupted: list[str] = []

    def garble_first_key(task: TaskRequest, call_next: Handler) -> TaskReply:
        reply = call_next(task)
        if task.kind == KEYS and not corrupted:
            corrupted.append(task.id)
            reply.meta["mask_public_key"] = "not-a-key"
        return reply

    ctx = InProcessContext(
        clients, 1, model_config=SECURE, datasets=declared(clients), mods=[garble_first_key]
    )
    result = run_rounds(ctx, plan())
    others = {name: float(c.rows) for name, c in clients.items() if name != "c0"}
    np.testing.assert_allclose(
        result.arrays["w"], halfway_mean(clients, others), rtol=0, atol=BOUND + 2.5e-7
    )
    assert any("carries no valid mask_public_key" in line for line in ctx.logs)


def newton_silos() -> list[pd.DataFrame]:
    rng = np.random.default_rng(11)
    frames = []
    for n, shift in ((400, -0.5), (1500, 0.0), (2600, 0.4)):
        x = rng.normal(shift, 1.0, size=(n, 3))
        eta = 0.3 + x @ np.array([0.5, -0.25, 0.1])
        y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
        frames.append(pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": y}))
    return frames


def newton_run(frames: list[pd.DataFrame], secure: dict[str, Any] | None) -> InProcessContext:
    raw: dict[str, Any] = {
        "model": {"params": {"input_size": 3}},
        "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
    }
    if secure is not None:
        raw["secure_aggregation"] = secure
    package = get_package("glm")
    mc, dc = package.parse_configs(raw, {"predictors": ["x0", "x1", "x2"], "target": "y"})
    executors = {
        f"silo{i}": GLMExecutor(mc, dc, LocalDataset(f, f.iloc[:100], 256))
        for i, f in enumerate(frames)
    }
    summaries = {
        f"silo{i}": DatasetSummary(train_rows=len(f), test_rows=100, columns=[])
        for i, f in enumerate(frames)
    }
    ctx = InProcessContext(executors, 30, model_config=raw, datasets=summaries)
    package.workflow(ctx, mc, dc)
    return ctx


def test_glm_newton_secure_sums_equal_statsmodels() -> None:
    import statsmodels.api as sm

    frames = newton_silos()
    pooled = pd.concat(frames)
    reference = sm.GLM(
        pooled["y"], sm.add_constant(pooled[["x0", "x1", "x2"]]), family=sm.families.Binomial()
    ).fit(tol=1e-13)
    ctx = newton_run(frames, {"enabled": True, "quantization_bits": 40})
    assert ctx.saved is not None
    beta = ctx.saved[0]["beta"]
    np.testing.assert_allclose(beta, reference.params, rtol=1e-6, atol=1e-8)
    # the statistics were secure sums: no newton_stats or target_summary in clear
    kinds = {kind for kind, _, _ in ctx.asked}
    assert {"newton_stats", "target_summary", KEYS, UNMASK} <= kinds
    assert any("newton converged" in line for line in ctx.logs)
    # with the default 24 bits the fit is within the quantization's reach of it
    coarse = newton_run(frames, {"enabled": True})
    assert coarse.saved is not None
    np.testing.assert_allclose(coarse.saved[0]["beta"], reference.params, rtol=0, atol=1e-4)


def test_linear_inference_secure_sums_equal_the_plain_fit() -> None:
    rng = np.random.default_rng(5)
    frames = []
    for n, shift in ((300, -0.4), (900, 0.0), (1500, 0.4)):
        shared = rng.normal(shift, 1.0, size=(n, 2))
        chunked = rng.normal(-shift, 1.0, size=(n, 3))
        chunked[:, 2] = rng.binomial(2, 0.3, size=n)
        eta = 0.2 + shared @ [0.5, -0.3] + 0.4 * chunked[:, 0]
        y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        frame = pd.DataFrame(
            np.column_stack([shared, chunked]), columns=["s0", "s1", "c0", "c1", "c2"]
        )
        frame["y"] = y
        frames.append(frame)
    package = get_package("linear_inference")
    data = {
        "target": "y",
        "shared_predictors": ["s0", "s1"],
        "chunked_predictors": ["c0", "c1", "c2"],
    }
    saved = {}
    for secure in (None, {"enabled": True, "quantization_bits": 40}):
        raw: dict[str, Any] = {"strategy": {"name": "LogitRegInference", "params": {}}}
        if secure is not None:
            raw["secure_aggregation"] = secure
        mc, dc = package.parse_configs(raw, data)
        executors = {
            f"silo{i}": package.executor(mc, dc, LocalDataset(f, None, 64))
            for i, f in enumerate(frames)
        }
        summaries = {
            f"silo{i}": DatasetSummary(train_rows=len(f), test_rows=0, columns=[])
            for i, f in enumerate(frames)
        }
        ctx = InProcessContext(executors, 30, model_config=raw, datasets=summaries)
        package.workflow(ctx, mc, dc)
        assert ctx.saved is not None
        saved[secure is not None] = ctx.saved[0]
        if secure is not None:
            assert "bundle_stats" in {kind for kind, _, _ in ctx.asked}
            assert KEYS in {kind for kind, _, _ in ctx.asked}
    for name, value in saved[False].items():
        np.testing.assert_allclose(saved[True][name], value, rtol=1e-6, atol=1e-9, err_msg=name)
