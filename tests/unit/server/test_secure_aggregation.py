"""Secure aggregation through the real engine: the server in a thread, real ``ClientRuntime``
clients (ffnet) in threads, the SDK outside.

What the guarantee means here: nothing the server persisted (``ThreadServer.stored()``: the
database with its WAL or every record of the memory store, the artifacts) and no line of its
logs holds a client's unmasked update -- neither its trained arrays, nor their update, nor its
unmasked encoding -- while the saved model is their weighted mean within the stated error.
Each client's update is recomputed outside the session (ffnet's fit is seeded by round), from
the global model its fit task carried. Clients killed after their masked input (a mod that
hangs, as a dead process answers nothing) leave a session that completes; below the threshold
the session fails naming the stage.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.client.mods import Handler, TaskReply, TaskRequest
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import SessionError
from fedsilo.federation import Participant, Reply, get_package
from fedsilo.http import ApiClient
from fedsilo.packages.ffnet import FFNetExecutor
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.encoding import FixedPoint, encode_update, pack
from fedsilo.server.settings import Settings
from fedsilo.server.state import MEMORY_URL
from fedsilo.strategies.aggregation import weighted_average
from fedsilo.wire import DatasetSummary, SessionStatus
from fedsilo.workflows.secure import SECAGG_META, UNMASK

BATCH = 64
CONFIG: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [4], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "seed": 23,
    "secure_aggregation": {"enabled": True},
}
DATA = {"predictors": FEATURES, "target": "y"}
ADMIN_TOKEN = "fs_test-admin-token"  # tests/conftest.py's


@pytest.fixture(params=["sqlite", "memory"])
def server_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    # As the shared fixture, with a short task timeout: a killed client's unmask (and
    # evaluate) task expires quickly.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return Settings(
        data_dir=tmp_path / "server",
        db_url=MEMORY_URL if request.param == "memory" else None,
        port=port,
        admin_token=ADMIN_TOKEN,
        task_timeout=8,
    )


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    made = make_frames(seed=0)
    # Warm torch up once (its first fit pays for lazy initialisation), so the clients' fits
    # stay well inside the short task timeout on a loaded machine.
    mc, dc = get_package("ffnet").parse_configs(CONFIG, DATA)
    executor = FFNetExecutor(mc, dc, LocalDataset(made["train_silo0"].iloc[:100], None, BATCH))
    _, init = executor.handle("init", {}, {})
    executor.handle("fit", {"round": 1}, init)
    return made


class Silo:
    """One real client: its data on disk, what its fit tasks carried, a kill switch."""

    def __init__(self, server: Any, sid: str, name: str, frame: pd.DataFrame, folder: Path):
        self.name = name
        self.frame = frame
        self.path = folder / f"{name}.parquet"
        frame.to_parquet(self.path)
        self.fit_tasks: list[TaskRequest] = []
        self.kill_at: str | None = None
        self.released = threading.Event()
        self.result: Any = None
        self.thread: threading.Thread | None = None
        self.api = ApiClient(server.url, server.token)
        self.runtime = ClientRuntime(
            self.api,
            sid,
            name,
            str(self.path),
            None,
            BATCH,
            poll_wait=2,
            on_event=lambda _: None,
            mods=[self.watch],
        )

    def watch(self, task: TaskRequest, call_next: Handler) -> TaskReply:
        """Outside the masking: notes the fit tasks; a killed client stops answering."""
        if self.kill_at is not None and task.kind == self.kill_at:
            self.released.wait(60)  # as a dead process: no reply until the test ends
            return TaskReply.failed("killed")
        if task.kind == "fit":
            self.fit_tasks.append(task)
        return call_next(task)

    def run(self) -> None:
        try:
            self.result = self.runtime.run()
        except Exception as exc:  # reported to the test thread
            self.result = exc
        finally:
            self.api.close()

    def unmasked(self, task: TaskRequest) -> dict[str, np.ndarray]:
        """The arrays this silo's executor answered to ``task`` (recomputed: seeded fit)."""
        package = get_package("ffnet")
        mc, dc = package.parse_configs(CONFIG, DATA)
        executor = FFNetExecutor(mc, dc, LocalDataset(self.frame, None, BATCH))
        meta = {k: v for k, v in task.meta.items() if k != SECAGG_META}
        _, arrays = executor.handle("fit", meta, dict(task.arrays))
        return {k: np.asarray(v) for k, v in arrays.items()}


@pytest.fixture
def federation(
    thread_server: Any, tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> Iterator[Any]:
    started: list[Silo] = []
    clients: list[Any] = []

    def start(n: int, rounds: int, killed: dict[str, str] | None = None) -> tuple[Any, list[Silo]]:
        client = fedsilo.connect(thread_server.url, thread_server.token)
        clients.append(client)
        session = client.create_fl_session(
            name="secure",
            description="secure aggregation",
            min_num_clients=n,
            num_rounds=rounds,
            package_name="ffnet",
            model_config=CONFIG,
            data_config=DATA,
        ).start()
        train = frames["train_silo0"]
        size = min(300, len(train) // n)
        silos = [
            Silo(
                thread_server,
                session.id,
                f"silo{i}",
                train.iloc[i * size : (i + 1) * size - 10 * i].reset_index(drop=True),
                tmp_path,
            )
            for i in range(n)
        ]
        for silo in silos:
            silo.kill_at = (killed or {}).get(silo.name)
            silo.thread = threading.Thread(target=silo.run, daemon=True)
            silo.thread.start()
        started.extend(silos)
        return session, silos

    yield start
    for silo in started:
        silo.released.set()
    for client in clients:
        client.close()


def updates_of(silos: list[Silo]) -> dict[str, list[dict[str, np.ndarray]]]:
    return {s.name: [s.unmasked(task) for task in s.fit_tasks] for s in silos}


def test_the_server_stores_and_logs_no_unmasked_update(thread_server: Any, federation: Any) -> None:
    session, silos = federation(3, 2)
    session.wait(timeout=120, progress=False)
    for silo in silos:
        assert silo.thread is not None
        silo.thread.join(timeout=30)
    assert [s.result for s in silos] == [SessionStatus.completed] * 3

    # The saved model is the weighted mean of the last round's client models.
    model = session.model()
    last = {s.name: s.unmasked(s.fit_tasks[-1]) for s in silos}
    rows = {s.name: len(s.frame) for s in silos}
    glob = dict(silos[0].fit_tasks[-1].arrays)
    none = DatasetSummary(train_rows=0, test_rows=0, columns=[])
    plain = weighted_average(
        glob,
        [
            Reply(Participant(n, n, none), {"num_examples": rows[n]}, arrays)
            for n, arrays in last.items()
        ],
    )
    bound = FixedPoint(24, 8.0).error_bound(1)
    for name, value in plain.items():
        np.testing.assert_allclose(
            model.arrays[name], value, rtol=0, atol=bound + 2 * float(np.spacing(np.float32(1)))
        )

    # Nothing persisted or logged holds any client's model, update or unmasked encoding.
    stored = thread_server.stored()
    assert stored
    logs = "\n".join(line.message for line in session.logs()).encode()
    spec = SecAggSpec()
    fixed = FixedPoint.from_spec(spec)
    needles: list[tuple[str, bytes]] = []
    for silo in silos:
        for task, arrays in zip(silo.fit_tasks, updates_of([silo])[silo.name], strict=True):
            update = {k: arrays[k].astype(np.float64) - task.arrays[k] for k in arrays}
            encoded = encode_update(fixed, update, rows[silo.name])
            needles.append((f"{silo.name} encoding", encoded.tobytes()[:64]))
            packed = pack(encoded, spec.modulus_bits).tobytes()[:64]
            needles.append((f"{silo.name} packed encoding", packed))
            for k, v in arrays.items():
                needles.append((f"{silo.name} {k}", v.tobytes()))
                needles.append((f"{silo.name} {k} update", update[k].tobytes()))
                needles.append((f"{silo.name} {k} text", repr(float(v.ravel()[0])).encode()))
    assert len(needles) > 20
    found = [
        (what, where)
        for what, needle in needles
        for where, content in [*stored.items(), ("logs", logs)]
        if needle in content
    ]
    assert found == []
    # ... while the scan does see what is stored: the saved model's arrays
    assert any(model.arrays["output.bias"].tobytes() in content for content in stored.values())


@pytest.mark.slow
@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("n", "killed"), [(3, 1), (10, 3)])
def test_clients_killed_after_their_masked_input_and_the_session_completes(
    federation: Any, n: int, killed: int
) -> None:
    names = {f"silo{i}": UNMASK for i in range(n - killed, n)}
    session, silos = federation(n, 1, names)
    session.wait(timeout=120, progress=False)
    assert session.status == "completed"
    lines = [line.message for line in session.logs()]
    assert any("task 'secagg.unmask' failed" in line for line in lines)
    # every client sent masked input: the model is the mean of all of them
    model = session.model()
    assert all(len(s.fit_tasks) == 1 for s in silos)
    assert np.all(np.isfinite(model.arrays["output.weight"]))


@pytest.mark.slow
@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_a_client_killed_before_its_masked_input_is_left_out(federation: Any) -> None:
    session, silos = federation(3, 1, {"silo2": "fit"})
    session.wait(timeout=120, progress=False)
    lines = [line.message for line in session.logs()]
    assert any("without 1 client(s) that dropped" in line for line in lines)
    assert len(silos[2].fit_tasks) == 0


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_below_the_threshold_the_session_fails_naming_the_stage(federation: Any) -> None:
    session, _ = federation(3, 1, {"silo1": UNMASK, "silo2": UNMASK})
    with pytest.raises(SessionError):
        session.wait(timeout=120, progress=False)
    reason = session.failure_reason or ""
    assert "secure aggregation stopped at task 'secagg.unmask'" in reason
    assert "the threshold of 2 needed" in reason


@pytest.mark.parametrize("server_settings", ["memory"], indirect=True)
def test_session_creation_refuses_the_flag_naming_why(api: Any) -> None:
    def create(package: str, model_config: dict[str, Any]) -> Any:
        return api.post(
            "/sessions",
            json={
                "name": "s",
                "package_name": package,
                "min_num_clients": 3,
                "num_rounds": 1,
                "model_config": model_config,
                "data_config": DATA,
            },
        )

    median = create("ffnet", {**CONFIG, "strategy": {"name": "FedMedian"}})
    assert median.status_code == 422
    assert "coordinate-wise median" in median.json()["detail"]
    gbm = create("gbm", {"secure_aggregation": {"enabled": True}})
    assert gbm.status_code == 422
    assert "gradient histograms" in gbm.json()["detail"]
    # A threshold above min_num_clients (3) could never be met: refused at creation.
    secure = CONFIG["secure_aggregation"]
    over = create("ffnet", {**CONFIG, "secure_aggregation": {**secure, "threshold": 4}})
    assert over.status_code == 422
    assert "threshold" in over.json()["detail"] and "4" in over.json()["detail"]
    assert create("ffnet", CONFIG).status_code == 201
