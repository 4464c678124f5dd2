"""PRL sessions in one process (every task and reply through the wire codec): the overlap
statistics and the alignment equal pandas' merge on the ids, for 1, 2 and 3 id columns of
integer, string and mixed dtypes, 2 and 3 parties, partial overlaps, both protocols."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import get_package
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.vfl.alignment import Alignment

PACKAGE = get_package("prl")


def people(seed: int, rows: int, columns: int, dtype: str) -> pd.DataFrame:
    """``rows`` of a population of 3 * rows people, ids in ``columns`` columns of ``dtype``
    (``int``, ``str`` or ``mixed``: alternating), plus a feature ``x``."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(3 * rows, rows, replace=False)
    frame = pd.DataFrame({"x": rng.normal(size=rows)})
    for j in range(columns):
        # column j of person p: a function of p, so a tuple identifies the person
        value = chosen * (j + 1) + 7 * j
        kind = dtype if dtype != "mixed" else ("int" if j % 2 == 0 else "str")
        frame[f"k{j}"] = value if kind == "int" else [f"P-{v:06d}-é" for v in value]
    return frame


def reference(frames: dict[str, pd.DataFrame], on: list[str]) -> pd.DataFrame:
    names = list(frames)
    merged = frames[names[0]][on].reset_index(names=names[0])
    for name in names[1:]:
        merged = merged.merge(frames[name][on].reset_index(names=name), on=on)
    return merged


def run_session(
    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]],
    id_columns: dict[str, list[str]],
    protocol: str = "keyed_hash",
) -> tuple[InProcessContext, Alignment]:
    raw = {
        "clients": {name: {"id_columns": cols} for name, cols in id_columns.items()},
        "psi_protocol": protocol,
    }
    model_config, data_config = PACKAGE.parse_configs({}, raw)
    executors = {
        name: PACKAGE.executor(model_config, data_config, LocalDataset(train, test, 1, name=name))
        for name, (train, test) in tables.items()
    }
    ctx = InProcessContext(executors, 1, package_name="prl")
    PACKAGE.workflow(ctx, model_config, data_config)
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    return ctx, Alignment.from_payload(meta, arrays)


CASES = [
    pytest.param(
        columns, dtype, parties, protocol, id=f"{columns}col-{dtype}-{parties}p-{protocol}"
    )
    for columns in (1, 2, 3)
    for dtype in ("int", "str", "mixed")
    for parties in (2, 3)
    for protocol in ("keyed_hash", "ecdh")
    if not (protocol == "ecdh" and parties != 2)
    if not (dtype == "mixed" and columns == 1)
]


@pytest.mark.parametrize(("columns", "dtype", "parties", "protocol"), CASES)
def test_overlap_and_alignment_equal_a_pandas_merge(
    columns: int, dtype: str, parties: int, protocol: str
) -> None:
    on = [f"k{j}" for j in range(columns)]
    names = [f"silo{i}" for i in range(parties)]
    tables = {
        name: (people(i, 120 + 10 * i, columns, dtype), people(50 + i, 40, columns, dtype))
        for i, name in enumerate(names)
    }
    ctx, alignment = run_session(tables, {name: on for name in names}, protocol)
    for t, table in enumerate(("train", "test")):
        merged = reference({n: tables[n][t] for n in names}, on)  # type: ignore[misc]
        assert 0 < len(merged) < min(len(tables[n][t]) for n in names)  # partial overlap
        for name in names:
            positions = alignment.positions(name, table)
            assert sorted(positions.tolist()) == sorted(merged[name].tolist())
            stats = ctx.rounds[1][1][name]
            n = len(tables[name][t])  # type: ignore[arg-type]
            assert stats[f"{table}_n_records"] == n
            assert stats[f"{table}_n_overlapped_records"] == len(merged)
            assert stats[f"{table}_frac_overlapped"] == pytest.approx(len(merged) / n)
        # one common order: row i of every client is the same person
        keys = [
            tables[n][t].iloc[alignment.positions(n, table)][on].to_numpy()  # type: ignore[union-attr]
            for n in names
        ]
        for other in keys[1:]:
            np.testing.assert_array_equal(keys[0], other)


def test_id_columns_may_be_named_differently_and_pair_by_position() -> None:
    a = people(1, 100, 2, "mixed")
    b = people(2, 90, 2, "mixed").rename(columns={"k0": "patient", "k1": "site"})
    b = b[["site", "x", "patient"]]  # column order in the file does not matter
    ctx, alignment = run_session(
        {"a": (a, None), "b": (b, None)}, {"a": ["k0", "k1"], "b": ["patient", "site"]}
    )
    merged = a.reset_index(names="ra").merge(
        b.reset_index(names="rb"), left_on=["k0", "k1"], right_on=["patient", "site"]
    )
    assert sorted(alignment.positions("a").tolist()) == sorted(merged["ra"].tolist())
    assert set(alignment.clients["a"].tables) == {"train"}  # no test tables: train only
    assert ctx.rounds[1][1]["b"]["train_n_overlapped_records"] == len(merged)


def test_integers_at_one_silo_and_strings_at_another_fail_naming_them() -> None:
    a = pd.DataFrame({"id": [1, 2, 3]})
    b = pd.DataFrame({"code": ["1", "2", "3"]})
    with pytest.raises(TaskError, match="integers at some clients and strings at others") as info:
        run_session({"a": (a, None), "b": (b, None)}, {"a": ["id"], "b": ["code"]})
    assert "a: 'id' integer" in str(info.value) and "b: 'code' string" in str(info.value)


def test_a_test_table_at_one_silo_only_fails() -> None:
    a, b = people(1, 50, 1, "int"), people(2, 50, 1, "int")
    with pytest.raises(TaskError, match=r"clients \['a'\] brought a test table and \['b'\]"):
        run_session({"a": (a, a.iloc[:5]), "b": (b, None)}, {"a": ["k0"], "b": ["k0"]})


def test_the_executor_refuses_before_joining() -> None:
    model_config, data_config = PACKAGE.parse_configs(
        {}, {"clients": {"a": {"id_columns": ["id"]}, "b": {"id_columns": ["id"]}}}
    )
    train = pd.DataFrame({"id": [1, 2, 2, None, 5]})
    test = pd.DataFrame({"other": [1]})
    with pytest.raises(DataError) as info:
        PACKAGE.executor(model_config, data_config, LocalDataset(train, test, 1, name="a"))
    problems = info.value.problems
    # the train table's null and repeat, the test table's missing column: all at once
    assert len(problems) == 3, problems
    assert problems[0].startswith("--train-path: id column 'id' has 1 null")
    assert problems[1].startswith("--train-path: 1 row(s) repeat an id tuple")
    assert "(row 2 repeats row 1)" in problems[1]
    assert problems[2].startswith("--test-path: missing the id column 'id'")
    with pytest.raises(ConfigError, match=r"'c' is not one of this PRL session's clients"):
        PACKAGE.executor(model_config, data_config, LocalDataset(train, None, 1, name="c"))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"clients": {"a": {"id_columns": ["id"]}}}, "clients"),
        ({"clients": {"a": {"id_columns": ["x", "y"]}, "b": {"id_columns": ["x"]}}}, "clients"),
        ({"clients": {"a": {"id_columns": ["x", "x"]}, "b": {"id_columns": ["x", "y"]}}}, "x"),
        (
            {
                "clients": {n: {"id_columns": ["id"]} for n in "abc"},
                "psi_protocol": "ecdh",
            },
            "psi_protocol 'ecdh' links exactly two clients",
        ),
        ({"clients": {"a": {"id_columns": ["id"]}}, "psi_protocol": "rsa"}, "psi_protocol"),
    ],
)
def test_bad_data_configs_name_the_problem(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PACKAGE.parse_data_config(raw)


class Defective:
    """A client that answers one task kind with a doctored reply."""

    def __init__(self, inner: Any, kind: str, doctor: Any) -> None:
        self.inner, self.kind, self.doctor = inner, kind, doctor

    def handle(self, kind: str, meta: dict[str, Any], arrays: Any) -> Any:
        reply_meta, reply_arrays = self.inner.handle(kind, meta, arrays)
        if kind == self.kind:
            reply_arrays = self.doctor(reply_arrays)
        return reply_meta, reply_arrays


@pytest.mark.parametrize(
    ("protocol", "kind", "doctor", "message"),
    [
        (
            "keyed_hash",
            "prl_hash",
            lambda a: {"train": np.vstack([a["train"][:-1], a["train"][:1]])},
            "client 'b' sent repeated hashes in its train table",
        ),
        (
            "keyed_hash",
            "prl_hash",
            lambda a: {"train": a["train"][:, :8]},
            r"client 'b' sent 'train' of dtype uint8 and shape \(60, 8\)",
        ),
        (
            "ecdh",
            "prl_ecdh_positions",
            lambda a: {"train": a["train"] + 1000},
            "client 'b' reported train positions that are not distinct rows",
        ),
    ],
)
def test_a_malformed_reply_fails_the_session_naming_the_client(
    protocol: str, kind: str, doctor: Any, message: str
) -> None:
    raw = {"clients": {n: {"id_columns": ["k0"]} for n in "ab"}, "psi_protocol": protocol}
    model_config, data_config = PACKAGE.parse_configs({}, raw)
    executors: dict[str, Any] = {
        n: PACKAGE.executor(
            model_config, data_config, LocalDataset(people(i, 60, 1, "int"), None, 1, name=n)
        )
        for i, n in enumerate("ab")
    }
    executors["b"] = Defective(executors["b"], kind, doctor)
    ctx = InProcessContext(executors, 1, package_name="prl")
    with pytest.raises(TaskError, match=message):
        PACKAGE.workflow(ctx, model_config, data_config)


@pytest.mark.parametrize("protocol", ["keyed_hash", "ecdh"])
def test_no_overlap_and_an_empty_table_give_zero_shared_records(protocol: str) -> None:
    a = pd.DataFrame({"id": np.arange(0, 50)})
    b = pd.DataFrame({"id": np.arange(100, 140)})
    empty = pd.DataFrame({"id": np.array([], dtype=np.int64)})
    ctx, alignment = run_session(
        {"a": (a, empty), "b": (b, b.iloc[:5])}, {"a": ["id"], "b": ["id"]}, protocol
    )
    assert alignment.overlap()["a"] == {
        "train": {"n_records": 50, "n_overlapped_records": 0, "frac_overlapped": 0.0},
        "test": {"n_records": 0, "n_overlapped_records": 0, "frac_overlapped": 0.0},
    }
    assert alignment.positions("b", "test").shape == (0,)
    assert ctx.rounds[1][1]["b"]["test_n_overlapped_records"] == 0


@pytest.mark.parametrize("protocol", ["keyed_hash", "ecdh"])
def test_a_restarted_server_relinks_to_the_same_alignment(protocol: str, tmp_path: Any) -> None:
    """PRL keeps no checkpoint: a restarted server runs the workflow again, and the clients
    (which kept running) answer each repeated question with the reply they released."""
    raw = {"clients": {n: {"id_columns": ["k0"]} for n in "ab"}, "psi_protocol": protocol}
    model_config, data_config = PACKAGE.parse_configs({}, raw)
    executors = {
        n: PACKAGE.executor(
            model_config, data_config, LocalDataset(people(i, 80, 1, "int"), None, 1, name=n)
        )
        for i, n in enumerate("ab")
    }
    saved = []
    for run in range(2):
        ctx = InProcessContext(executors, 1, package_name="prl", state_dir=tmp_path)
        PACKAGE.workflow(ctx, model_config, data_config)
        assert ctx.saved is not None
        saved.append(ctx.saved)
        assert bool(ctx.replayed) == (run == 1)
    for key, positions in saved[0][0].items():
        np.testing.assert_array_equal(saved[1][0][key], positions, err_msg=key)
    assert saved[0][1] == saved[1][1]
