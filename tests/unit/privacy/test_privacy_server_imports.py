"""The server half of glm under differential privacy runs without importing torch.

The private clients need the accountant (Opacus, hence torch); the server, which only does
numpy post-processing and Newton steps on what they release, must not (issue 9, item 10).
Importing the workflow modules is not enough: ``run`` picks its private workflow at run time.
So a real private session is run here, its clients' replies recorded; then a fresh
interpreter imports only the server half and runs the same workflow against executors that
answer from the recording, checks each question is the one the real clients were asked, and
reports which modules it loaded. Its model must be the real session's, to the bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import Executor, get_package
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import Arrays, DatasetSummary, encode_frame

PACKAGE = get_package("glm")
PREDICTORS = ["x0", "x1", "x2"]
DATA_CONFIG = {"predictors": PREDICTORS, "target": "y"}
NUM_ROUNDS = 3
ASKED = "asked."  # prefix of the recorded question's arrays inside a recording frame

CONFIGS: dict[str, dict[str, Any]] = {
    "newton": {
        "model": {"params": {"input_size": 3}},
        "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
        "differential_privacy_params": {"epsilon": 8, "max_grad_norm": 7},
    },
    "sgd": {
        "model": {"params": {"input_size": 3}},
        "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
        "solver": "sgd",
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.5, "momentum": 0.0}},
        "local_epochs": 1,
        "differential_privacy_params": {"epsilon": 8, "max_grad_norm": 7},
    },
}

_PROBE = """
import json, sys
from pathlib import Path

import numpy as np

from fedsilo.federation import get_package
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import DatasetSummary, decode_frame

folder, config, data_config, rounds = Path(sys.argv[1]), *map(json.loads, sys.argv[2:5])
datasets = {name: DatasetSummary(**summary) for name, summary in json.loads(sys.argv[5]).items()}
ASKED = "asked."
SERVER_HALF = ("fedsilo.privacy", "fedsilo.packages")


class RecordedSilo:
    '''Answers each task with the real client's recorded reply, once it checks the question.'''

    def __init__(self, name):
        frames = folder.glob(f"{name}-*.frame")
        self.frames = sorted(frames, key=lambda path: int(path.stem.split("-")[1]))

    def handle(self, kind, meta, arrays):
        recorded, header = decode_frame(self.frames.pop(0).read_bytes())
        asked = {k[len(ASKED):]: v for k, v in recorded.items() if k.startswith(ASKED)}
        if (header["kind"], header["question"]) != (kind, meta) or sorted(asked) != sorted(arrays):
            raise AssertionError(f"asked {kind} {meta}; the real client was asked {header}")
        for name, array in arrays.items():
            if not np.array_equal(array, asked[name]):
                raise AssertionError(f"{kind} {meta}: array {name!r} differs from the recording")
        return header["meta"], {k: v for k, v in recorded.items() if not k.startswith(ASKED)}


package = get_package("glm")
model_config, data_config = package.parse_configs(config, data_config)
ctx = InProcessContext(
    {name: RecordedSilo(name) for name in datasets}, rounds, package_name="glm", datasets=datasets
)
silos = dict(ctx.executors)
package.workflow(ctx, model_config, data_config)
arrays, meta, _ = ctx.saved
print(json.dumps({
    "unasked": {name: len(silo.frames) for name, silo in silos.items()},
    "beta": arrays["beta"].tolist(),
    "privacy": meta["privacy"],
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "opacus", "opendp"}),
    "loaded": sorted(m for m in sys.modules if m.startswith(SERVER_HALF)),
}))
"""


class Recorder:
    """Wraps a real executor and writes each question and reply to ``folder`` in order."""

    def __init__(self, executor: Executor, name: str, folder: Path) -> None:
        self.executor, self.name, self.folder = executor, name, folder
        self.count = 0

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        question = dict(meta)
        reply_meta, reply_arrays = self.executor.handle(kind, meta, arrays)
        recorded = {**reply_arrays, **{ASKED + k: v for k, v in arrays.items()}}
        header = {"kind": kind, "question": question, "meta": reply_meta}
        path = self.folder / f"{self.name}-{self.count}.frame"
        path.write_bytes(encode_frame(recorded, header))
        self.count += 1
        return reply_meta, reply_arrays


def silos() -> dict[str, LocalDataset]:
    rng = np.random.default_rng(3)
    datasets = {}
    for name, n in (("silo0", 400), ("silo1", 700)):
        frame = pd.DataFrame(rng.normal(size=(n + 100, 3)), columns=PREDICTORS)
        eta = 0.2 + frame.to_numpy() @ np.array([0.8, -0.5, 0.3])
        frame["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
        datasets[name] = LocalDataset(frame.iloc[:n], frame.iloc[n:], 64)
    return datasets


@pytest.mark.parametrize("solver", sorted(CONFIGS))
def test_the_private_glm_workflow_runs_on_a_torch_free_server(solver: str, tmp_path: Path) -> None:
    config = CONFIGS[solver]
    mc, dc = PACKAGE.parse_configs(config, DATA_CONFIG)
    datasets = silos()
    rows = {name: len(data.train) for name, data in datasets.items()}
    executors = {
        name: Recorder(PACKAGE.executor(mc, dc, data), name, tmp_path)
        for name, data in datasets.items()
    }
    summaries = {
        name: DatasetSummary(train_rows=n, test_rows=100, columns=[]) for name, n in rows.items()
    }
    ctx = InProcessContext(executors, NUM_ROUNDS, package_name="glm", datasets=summaries)
    PACKAGE.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    real_beta, real_meta, _ = ctx.saved

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(tmp_path),
            json.dumps(config),
            json.dumps(DATA_CONFIG),
            json.dumps(NUM_ROUNDS),
            json.dumps({name: summary.model_dump() for name, summary in summaries.items()}),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []  # neither torch nor Opacus, nor OpenDP (the clients' noise)
    loaded = result["loaded"]
    # The server half only: no client module, no accountant.
    assert "fedsilo.packages.glm.client" not in loaded
    assert "fedsilo.packages.glm.local_sgd" not in loaded
    assert "fedsilo.privacy.accounting" not in loaded
    expected_workflow = (
        "fedsilo.packages.glm.private_newton" if solver == "newton" else "fedsilo.packages.glm.sgd"
    )
    assert expected_workflow in loaded
    # Every recorded reply was asked for, and the server's maths matched the real one's.
    assert result["unasked"] == {name: 0 for name in rows}
    assert all(recorder.count > 0 for recorder in executors.values())
    np.testing.assert_array_equal(np.asarray(result["beta"]), real_beta["beta"])
    assert result["privacy"] == json.loads(json.dumps(real_meta["privacy"]))
