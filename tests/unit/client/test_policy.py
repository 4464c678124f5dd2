"""The data owner's policy: the file, each rule refusing and admitting, the release mods.

The rules run on real sessions as the server describes them (``SessionPublic``), the
packages' real parsed configs, and the client's real mod chain over a handler standing in
for the executor (a function returning the reply a package would).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.client.mods import TaskReply, TaskRequest, chain, client_mods
from fedsilo.client.policy import (
    POLICY_ENV,
    DataOwnerPolicy,
    PolicyGuard,
    PolicyRefusal,
    load_policy,
    planned_epsilon,
)
from fedsilo.client.replies import ReplyStore
from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.wire import SessionPublic, SessionStatus

GLM = {
    "model": {"params": {"input_size": 3}},
    "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
}
DIGEST = "ab" * 32
SESSION = "the data owner's policy refuses the session: rule"
RELEASE = "the data owner's policy refuses the release: rule"


def _session(package: str = "echo", model_config: dict[str, Any] | None = None) -> SessionPublic:
    now = datetime.now(UTC)
    return SessionPublic(
        id="0123456789",
        name="s",
        description="",
        kind="hfl",
        package_name=package,
        min_num_clients=1,
        num_rounds=1,
        model_config=model_config or {},
        data_config={},
        status=SessionStatus.pending,
        round=0,
        created_at=now,
        updated_at=now,
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def _guard(
    tmp_path: Path, policy: DataOwnerPolicy, rows: int = 100, attributes: int = 3, **kw: Any
) -> PolicyGuard:
    return policy.guard(
        kw.get("model_config"),
        {"train": rows, "test": kw.get("test_rows", 0)},
        attributes,
        {"train": str(tmp_path / "silo.csv"), "test": None},
        tmp_path / "state",
    )


def _release(guard: PolicyGuard, meta: dict[str, Any], kind: str = "fit", **task_meta: Any) -> Any:
    """One task through the policy's two mods over a handler answering ``meta``."""
    calls: list[TaskRequest] = []

    def executor(task: TaskRequest) -> TaskReply:
        calls.append(task)
        return TaskReply(status="ok", meta=dict(meta), arrays={"w": np.ones(2)})

    handle = chain([guard.gate, guard.check_release], executor)
    return handle(TaskRequest("t1", kind, 1, dict(task_meta), {})), calls


# ----------------------------------------------------------------------------- the file


def test_the_file_parses_with_every_key(tmp_path: Path) -> None:
    policy = load_policy(
        _write(
            tmp_path,
            f"""
            min_rows = 20
            max_epsilon = 4.0
            require_dp = true
            require_secure_aggregation = true
            allowed_packages = ["glm", "eda"]
            approved_package_digests = ["mypkg@{DIGEST}"]
            """,
        )
    )
    assert policy == DataOwnerPolicy(
        min_rows=20,
        max_epsilon=4.0,
        require_dp=True,
        require_secure_aggregation=True,
        allowed_packages=["glm", "eda"],
        approved_package_digests=[f"mypkg@{DIGEST}"],
    )


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "# nothing set\n"))
    assert policy == DataOwnerPolicy()
    assert policy.min_rows is None and policy.max_epsilon is None
    assert policy.allowed_packages is None and policy.approved_package_digests == []
    # the default min_rows is the session's attributes + 5 (seed 004)
    assert _guard(tmp_path, policy, attributes=4).min_rows == 9


def test_a_bad_file_lists_every_problem_at_once_naming_the_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        min_rows = 0
        max_epsilon = "4"
        require_dp = "yes"
        allowed_packages = "glm"
        approved_package_digests = ["glm@123"]
        max_rows = 5
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"The policy file {str(path)!r} has 6 problem(s): ")
    for expected in (
        "'min_rows': Input should be greater than or equal to 1, got 0",
        "'max_epsilon': Input should be a valid number, got '4'",
        "'require_dp': Input should be a valid boolean, got 'yes'",
        "'allowed_packages': Input should be a valid list, got 'glm'",
        "'approved_package_digests.0' must be NAME@SHA256 (64 lowercase hex digits), got 'glm@123'",
        "'max_rows' is not a policy key (known: min_rows, max_epsilon",
    ):
        assert expected in message
    assert "\n" not in message


def test_a_file_that_is_not_toml_or_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 1"):
        load_policy(_write(tmp_path, "min_rows: 5\n"))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "absent.toml")


def test_every_client_command_that_joins_takes_the_policy() -> None:
    import typer

    from fedsilo.cli.client import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    joining = {name for name in commands if name not in ("version", "log")}
    assert joining == {"train", "eda", "join", "prl", "vfl-train", "vfl-predict"}
    for name in joining:
        (option,) = [p for p in commands[name].params if p.name == "policy"]
        assert (option.opts, option.envvar) == (["--policy"], POLICY_ENV), name


# --------------------------------------------------------------- before joining


def test_allowed_packages() -> None:
    policy = DataOwnerPolicy(allowed_packages=["glm"])
    policy.check_session(_session("glm"))
    with pytest.raises(PolicyRefusal) as caught:
        policy.check_session(_session("echo"))
    assert caught.value.rule == "allowed_packages"
    assert caught.value.reason == (
        f"{SESSION} 'allowed_packages': package 'echo' is not among the allowed ['glm']"
    )


def test_require_secure_aggregation() -> None:
    policy = DataOwnerPolicy(require_secure_aggregation=True)
    policy.check_session(_session("glm", {"secure_aggregation": {"enabled": True}}))
    for config in ({}, {"secure_aggregation": {"enabled": False}}, {"secure_aggregation": 3}):
        with pytest.raises(PolicyRefusal) as caught:
            policy.check_session(_session("glm", config))
        assert caught.value.rule == "require_secure_aggregation"
    DataOwnerPolicy().check_session(_session("glm", {}))


def test_max_epsilon_and_require_dp_on_the_packages_parsed_budgets(tmp_path: Path) -> None:
    glm = get_package("glm")
    eda = get_package("eda")
    private = glm.parse_model_config(
        {
            **GLM,
            "solver": "sgd",
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05}},
            "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
        }
    )
    plain = glm.parse_model_config(GLM)
    assert planned_epsilon(private) == 4.0 and planned_epsilon(plain) is None
    assert planned_epsilon(eda.parse_model_config({})) == 1.0  # eda's default budget
    assert planned_epsilon(eda.parse_model_config({"epsilon": None})) is None

    _guard(tmp_path, DataOwnerPolicy(max_epsilon=4), model_config=private)
    _guard(tmp_path, DataOwnerPolicy(max_epsilon=0.5), model_config=plain)
    with pytest.raises(PolicyRefusal) as caught:
        _guard(tmp_path, DataOwnerPolicy(max_epsilon=3.5), model_config=private)
    assert caught.value.reason == (
        f"{SESSION} 'max_epsilon': the session plans epsilon 4 on this silo, above 3.5"
    )
    _guard(tmp_path, DataOwnerPolicy(require_dp=True), model_config=private)
    with pytest.raises(PolicyRefusal, match="rule 'require_dp': the session plans no"):
        _guard(tmp_path, DataOwnerPolicy(require_dp=True), model_config=plain)


def test_min_rows_on_the_tables_before_joining(tmp_path: Path) -> None:
    policy = DataOwnerPolicy()
    _guard(tmp_path, policy, rows=8, attributes=3)  # 3 + 5
    with pytest.raises(PolicyRefusal) as caught:
        _guard(tmp_path, policy, rows=7, attributes=3)
    assert caught.value.reason == (
        f"{SESSION} 'min_rows': the train table has 7 row(s); at least 8 are required"
    )
    with pytest.raises(PolicyRefusal, match="the test table has 2 row"):
        _guard(tmp_path, policy, rows=50, attributes=3, test_rows=2)


# ------------------------------------------------------------------- each release


def test_min_rows_on_each_release(tmp_path: Path) -> None:
    guard = _guard(tmp_path, DataOwnerPolicy(min_rows=10))
    reply, calls = _release(guard, {"num_rows": 10, "train_loss": 0.5})
    assert reply.ok and len(calls) == 1
    for meta, expected in (
        ({"num_rows": 9}, "a release over 9 row(s) of the train table; at least 10 are required"),
        (
            {"num_examples": 4},
            "a release over 4 row(s) of the train table; at least 10 are required",
        ),
        (
            {"test_num_examples": 3},
            "a release over 3 row(s) of the test table; at least 10 are required",
        ),
        ({"num_rows": "many"}, "the reply's num_rows is not a row count ('many')"),
    ):
        reply, _ = _release(guard, meta)
        assert not reply.ok
        assert reply.error == (f"task t1 (fit, round 1): {RELEASE} 'min_rows': {expected}")
        assert reply.arrays == {} and "train_loss" not in reply.meta
    # nothing evaluated: no test rows released
    assert _release(guard, {"num_rows": 10, "test_num_examples": 0})[0].ok


def test_the_delta_rule_holds_across_sessions_on_the_same_table(tmp_path: Path) -> None:
    policy = DataOwnerPolicy(min_rows=10)
    first = _guard(tmp_path, policy, rows=100)
    assert _release(first, {"num_rows": 100})[0].ok
    history = tmp_path / "state" / "policy" / "released_rows.json"
    assert history.read_text() == f'{{"{tmp_path / "silo.csv"}": [100]}}'

    # the table grew by 3 rows: refused before joining, and a release of 103 rows too
    with pytest.raises(PolicyRefusal, match=r"the train table has 103 row.*, 3 from the 100"):
        _guard(tmp_path, policy, rows=103)
    later = _guard(tmp_path, policy, rows=100)
    reply, _ = _release(later, {"num_examples": 95})
    assert not reply.ok
    assert "a release over 95 row(s) of the train table, 5 from the 100 an earlier" in str(
        reply.error
    )
    # the same rows again, or 10 more, are released
    assert _release(later, {"num_rows": 100})[0].ok
    assert _release(later, {"num_rows": 110})[0].ok
    with pytest.raises(PolicyRefusal, match=r"105 row.*, 5 from the 100"):
        _guard(tmp_path, policy, rows=105)
    # another table has its own history
    other = policy.guard(None, {"train": 103}, 3, {"train": "other.csv"}, tmp_path / "state")
    assert _release(other, {"num_rows": 103})[0].ok


def test_a_reply_without_counts_covers_the_whole_table(tmp_path: Path) -> None:
    policy = DataOwnerPolicy(min_rows=10)
    guard = _guard(tmp_path, policy, rows=40)
    reply, _ = _release(guard, {"dataset_name": "d", "columns": []}, kind="eda_profile")
    assert reply.ok
    # recorded for the delta rule: 40 rows released
    with pytest.raises(PolicyRefusal, match="the train table has 42 row"):
        _guard(tmp_path, policy, rows=42)


def test_each_column_of_an_exact_eda_release(tmp_path: Path) -> None:
    guard = _guard(tmp_path, DataOwnerPolicy(min_rows=10), rows=40)

    def columns(count: float | None) -> list[dict[str, Any]]:
        return [
            {"name": "a", "moments": {"count": 40, "nulls": 0}},
            {"name": "b", "moments": {"count": count, "nulls": 40 - (count or 0)}},
        ]

    reply, _ = _release(guard, {"columns": columns(3), "releases": []}, kind="eda_summarize")
    assert reply.error == (
        f"task t1 (eda_summarize, round 1): {RELEASE} 'min_rows': a release of column 'b' "
        "over 3 value(s); at least 10 are required"
    )
    for admitted in (10, 0, None):  # enough values; none (only the null count); unknown
        meta = {"columns": columns(admitted), "releases": []}
        assert _release(guard, meta, kind="eda_summarize")[0].ok
    # noised (a DP ledger): its noisy counts are not held to the floor
    noised = {"columns": columns(3), "releases": [{"column": "b", "epsilon": 0.5}]}
    assert _release(guard, noised, kind="eda_summarize")[0].ok


def test_max_epsilon_on_the_epsilon_a_reply_reports(tmp_path: Path) -> None:
    guard = _guard(tmp_path, DataOwnerPolicy(min_rows=10, max_epsilon=2))
    assert _release(guard, {"num_examples": 50, "epsilon_spent": 1.9})[0].ok
    reply, _ = _release(guard, {"num_examples": 50, "epsilon_spent": 2.5})
    assert "rule 'max_epsilon': the reply has spent epsilon 2.5, above 2" in str(reply.error)


def test_a_plain_fit_is_refused_when_secure_aggregation_is_required(tmp_path: Path) -> None:
    guard = _guard(tmp_path, DataOwnerPolicy(min_rows=10, require_secure_aggregation=True))
    reply, calls = _release(guard, {"num_examples": 50})
    assert calls == []  # the executor never trained
    assert reply.error == (
        "task t1 (fit, round 1): the data owner's policy refuses the release: rule "
        "'require_secure_aggregation': the server asked for a fit update without secure "
        "aggregation"
    )
    assert _release(guard, {"num_examples": 50}, secagg={"survivors": []})[0].ok
    assert _release(guard, {"test_num_examples": 50}, kind="evaluate")[0].ok


def test_the_client_chain_checks_releases_and_never_replays_a_refusal(tmp_path: Path) -> None:
    lines: list[str] = []
    policy = DataOwnerPolicy(min_rows=10)
    guard = policy.guard(None, {"train": 50}, 2, {"train": "t.csv"}, tmp_path, lines.append)
    store = ReplyStore(tmp_path, "0123456789", "silo")
    mods = client_mods(store, policy=guard)
    assert mods[1:] == [guard.gate, mods[2], guard.check_release]
    counts = iter([4, 50])

    def executor(task: TaskRequest) -> TaskReply:
        return TaskReply(status="ok", meta={"num_rows": next(counts)})

    handle = chain(mods, executor)
    task = TaskRequest("t1", "glm_stats", 1, {}, {})
    refused = handle(task)
    assert not refused.ok
    assert lines == [
        "refused to release task t1 (glm_stats, round 1): the data owner's policy refuses "
        "the release: rule 'min_rows': a release over 4 row(s) of the train table; at least 10 are "
        "required"
    ]
    # a refusal is not stored: the question asked again reaches the executor
    assert handle(task).ok
    assert handle(task).replayed
    store.close()
    assert client_mods(store)[1:] != [guard.gate]  # no policy, no policy mods


@pytest.mark.parametrize(
    ("package_name", "model_config", "data_config", "first_kind"),
    [
        (
            "glm",
            GLM | {"model": {"params": {"input_size": 2}}},
            {"predictors": ["x0", "x1"], "target": "y"},
            "target_summary",
        ),
        (
            "linear_inference",
            {"strategy": {"name": "LogitRegInference", "params": {}}, "seed": 23},
            {"target": "y", "shared_predictors": ["x0"], "chunked_predictors": ["x1"]},
            None,
        ),
    ],
)
def test_the_exact_statistics_of_real_packages_are_held_to_min_rows(
    tmp_path: Path,
    package_name: str,
    model_config: dict[str, Any],
    data_config: dict[str, Any],
    first_kind: str | None,
) -> None:
    """glm newton's and linear_inference's sums, through their real executors and workflows
    in process: a silo of 30 rows is refused at min_rows 40 and admitted at 30."""
    import pandas as pd

    from fedsilo.data.dataset import LocalDataset
    from fedsilo.errors import TaskError
    from fedsilo.runners.inprocess import InProcessContext

    rng = np.random.default_rng(0)
    frames = []
    for n in (30, 60):
        x = rng.normal(size=(n, 2))
        eta = x @ [0.5, -0.3]
        frame = pd.DataFrame(x, columns=["x0", "x1"])
        frame["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
        frames.append(frame)
    package = get_package(package_name)
    mc, dc = package.parse_configs(model_config, data_config)

    def run(min_rows: int) -> InProcessContext:
        # No table: the delta rule has no source here (several silos share the guard).
        guard = DataOwnerPolicy(min_rows=min_rows).guard(None, {}, 0, {}, tmp_path)
        executors = {
            f"silo{i}": package.executor(mc, dc, LocalDataset(f, None, 64), None)
            for i, f in enumerate(frames)
        }
        ctx = InProcessContext(executors, 10, mods=[guard.gate, guard.check_release])
        package.workflow(ctx, mc, dc)
        return ctx

    with pytest.raises(TaskError) as caught:
        run(40)
    message = str(caught.value)
    assert "silo0: client reported an error: task" in message
    assert (
        f"{RELEASE} 'min_rows': a release over 30 row(s) of the train table; at least 40 are "
        "required"
    ) in message
    if first_kind is not None:
        assert f"({first_kind}, round 0)" in message
    assert "silo1" not in message
    assert run(30).saved is not None


def test_a_relative_path_is_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = DataOwnerPolicy(min_rows=10)
    monkeypatch.chdir(tmp_path)
    guard = policy.guard(None, {"train": 50}, 2, {"train": "silo.csv"}, tmp_path / "state")
    assert guard.source == str(tmp_path / "silo.csv")
    assert _release(guard, {"num_rows": 50})[0].ok
    with pytest.raises(PolicyRefusal, match="the train table has 52 row"):
        _guard(tmp_path, policy, rows=52)  # the same table, by its absolute path
    url = policy.guard(None, {"train": 52}, 2, {"dataset": "s3://b/silo.csv"}, tmp_path)
    assert url.source == "s3://b/silo.csv"


def test_released_rows_lose_no_entry_when_many_writers_record_at_once(tmp_path: Path) -> None:
    # Three participants of one client (threads, each with its own history object) share
    # the state dir: an unlocked read-modify-write lost a table's entry (seen in CI).
    from fedsilo.client.release_guard import ReleasedRows

    def record(index: int) -> None:
        ReleasedRows(tmp_path).record(f"/data/table-{index}.parquet", 10 + index)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = ReleasedRows(tmp_path)
    assert all(history.counts(f"/data/table-{i}.parquet") == [10 + i] for i in range(24))
