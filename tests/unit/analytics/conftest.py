"""Run the eda package's workflow over real executors, in process
(:class:`fedsilo.runners.inprocess.InProcessContext`).

Every task and reply goes through the wire codec (JSON meta, safetensors arrays) as it would
over HTTP, so what the workflow sees is what a server would see; only the network is left out
(``tests/unit/analytics/test_eda_sdk.py`` and ``tests/e2e/test_eda_session.py`` add it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.results import EdaResults
from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import Checkpoint, Executor, get_package
from fedsilo.runners.inprocess import InProcessContext


@dataclass
class EdaRun:
    """What one in-process eda session did, as the tests read it."""

    context: InProcessContext

    @property
    def executors(self) -> Mapping[str, Executor]:
        return self.context.executors

    @property
    def asked(self) -> list[str]:
        """The task kinds sent, in order (one entry per send)."""
        return [kind for kind, _, _ in self.context.asked]

    @property
    def rounds(self) -> list[int]:
        return sorted(self.context.rounds)

    @property
    def checkpointed(self) -> Checkpoint | None:
        """The last checkpoint this run wrote (None when it wrote none)."""
        checkpoints = self.context.checkpoints
        return checkpoints[max(checkpoints)] if checkpoints else None

    def results(self) -> EdaResults:
        assert self.context.saved is not None, "the workflow saved no results"
        arrays, meta, _ = self.context.saved
        return EdaResults.from_payload(meta, arrays)


RunEda = Callable[..., EdaRun]


@pytest.fixture
def run_eda() -> RunEda:
    """``run_eda(model_config, data_config, {dataset_name: frame})`` -> the run after the
    workflow ran (``.results()`` reads what it saved)."""

    def run(
        model_config: Mapping[str, Any],
        data_config: Mapping[str, Any],
        frames: Mapping[str, pd.DataFrame],
        restored: Checkpoint | None = None,
        executors: Mapping[str, Executor] | None = None,
    ) -> EdaRun:
        package = get_package("eda")
        mc, dc = package.parse_configs(model_config, data_config)
        if executors is None:
            executors = {
                name: package.executor(mc, dc, LocalDataset(frame, None, 1, name=name))
                for name, frame in frames.items()
            }
        ctx = InProcessContext(
            executors,
            num_rounds=2,
            package_name="eda",
            checkpoint=restored,
            model_config=model_config,
            data_config=data_config,
        )
        package.workflow(ctx, mc, dc)
        return EdaRun(ctx)

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
