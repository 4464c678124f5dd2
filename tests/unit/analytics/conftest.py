"""Run the eda package's workflow over real executors, in process, with a recording context.

Every task and reply goes through the wire codec (JSON meta, safetensors arrays) as it would
over HTTP, so what the workflow sees is what a server would see; only the network is left out
(``tests/unit/analytics/test_eda_sdk.py`` and ``tests/e2e/test_eda_session.py`` add it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.results import EdaResults
from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import Checkpoint, Participant, Reply, SessionInfo, get_package
from fedsilo.wire import DatasetSummary, ReplyEnvelope, decode_frame, encode_frame


@dataclass
class RecordingContext:
    """A SessionContext whose participants are executors in this process."""

    session: SessionInfo
    executors: dict[str, Any]
    participants: list[Participant]
    saved: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None
    checkpointed: Checkpoint | None = None
    restored: Checkpoint | None = None
    asked: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        assert n <= len(self.participants), f"workflow waits for {n} clients"
        return self.participants

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> list[Reply]:
        self.asked.append(kind)
        replies = []
        task_meta = json.loads(json.dumps(dict(meta or {})))
        for participant in participants:
            executor = self.executors[participant.client_name]
            out_meta, out_arrays = executor.handle(kind, task_meta, {})
            frame = encode_frame(out_arrays, ReplyEnvelope(meta=out_meta))
            got_arrays, header = decode_frame(frame)
            replies.append(Reply(participant, header["meta"], got_arrays))
        return replies

    def record_round(self, rnd: int, federated: Any, per_client: Any) -> None:
        self.rounds.append(rnd)

    def checkpoint(self, rnd: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        got, header = decode_frame(encode_frame(dict(arrays), {"round": rnd, "meta": dict(meta)}))
        self.checkpointed = Checkpoint(rnd, got, header["meta"])

    def restore(self) -> Checkpoint | None:
        return self.restored

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], round: int) -> None:
        got, header = decode_frame(encode_frame(dict(arrays), dict(meta)))
        self.saved = (got, header)

    def log(self, message: str) -> None:
        pass

    def results(self) -> EdaResults:
        assert self.saved is not None, "the workflow saved no results"
        return EdaResults.from_payload(self.saved[1], self.saved[0])


RunEda = Callable[..., RecordingContext]


@pytest.fixture
def run_eda() -> RunEda:
    """``run_eda(model_config, data_config, {dataset_name: frame})`` -> the context after the
    workflow ran (``.results()`` reads what it saved)."""

    def run(
        model_config: Mapping[str, Any],
        data_config: Mapping[str, Any],
        frames: Mapping[str, pd.DataFrame],
        restored: Checkpoint | None = None,
        executors: dict[str, Any] | None = None,
    ) -> RecordingContext:
        package = get_package("eda")
        mc, dc = package.parse_configs(model_config, data_config)
        if executors is None:
            executors = {
                name: package.executor(mc, dc, LocalDataset(frame, None, 1, name=name))
                for name, frame in frames.items()
            }
        summary = DatasetSummary(train_rows=0, test_rows=0, columns=[])
        ctx = RecordingContext(
            session=SessionInfo(
                id="0123456789",
                name="eda",
                package_name="eda",
                min_num_clients=len(frames),
                num_rounds=2,
                model_config=dict(model_config),
                data_config=dict(data_config),
            ),
            executors=executors,
            participants=[
                Participant(id=f"p{i}", client_name=name, dataset=summary)
                for i, name in enumerate(frames)
            ],
            restored=restored,
        )
        package.workflow(ctx, mc, dc)
        return ctx

    return run


def make_frame(seed: int, rows: int, shift: float = 0.0) -> pd.DataFrame:
    """Columns like the seed walkthrough's: x0, x1 (normal, some nulls), x5 (skewed,
    positive), x7 (signed, with zeros), x10 (small integer codes), x11 (strings, some null)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x0": rng.uniform(0.0, 1.0, rows),
            "x1": rng.normal(10.0 + shift, 2.0, rows),
            "x5": rng.lognormal(1.0, 0.8, rows),
            "x7": np.where(rng.random(rows) < 0.1, 0.0, rng.normal(0.0, 5.0, rows)),
            "x10": rng.integers(0, 5, rows),
            "x11": rng.choice(["red", "green", "blue", "violet"], rows, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    frame.loc[frame.index % 11 == 3, "x1"] = np.nan
    frame["x11"] = frame["x11"].astype(object)
    frame.loc[frame.index % 17 == 5, "x11"] = None
    return frame


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    return {"dataset_one": make_frame(1, 3000), "dataset_two": make_frame(2, 2000, shift=1.5)}
