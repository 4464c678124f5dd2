"""The client half of splitnn: one party's part of the split network.

Built before joining, the executor checks this silo's columns (its predictors numeric and
without nulls, and at the label client the target) and refuses the session with every
problem at once. Then, task kinds (:data:`KINDS`) in the order the workflow sends them:

``vfl_prepare``
    Row counts and, per table, the keyed digest of its id columns under the key this client
    kept from the PRL session (:func:`fedsilo.vfl.alignment.digest_key_path`), which the
    server compares with the PRL session's: a client bringing another table is refused.
``vfl_train`` (one per round; every party at once)
    The task carries this party's aligned row positions and who the peers are. The parties
    walk the round's mini-batches in one shared order (:func:`~.model.batches`): each
    passive party sends the active party the embedding of its rows of the batch and waits
    for that embedding's gradient; the active party runs the label model on every
    embedding side by side, computes the loss, sends each passive party its gradient and
    steps its own parts. Then the passive parties send the embeddings of the aligned test
    rows and the active party reports the round's metrics. Every message is sealed to its
    recipient (:mod:`~.channel`). Each party checkpoints its parts at its storage path
    (:mod:`~.parts`) at the end of the round.
``vfl_predict``
    The passive parties send the embeddings of the aligned rows of the dataset; the active
    party writes one CSV row per aligned record -- its id columns, then the predictions --
    at its ``storage_path``. Passive parties write nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.splitnn.channel import PeerChannel, RoundAbandoned
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.packages.splitnn.parts import PartStore
from fedsilo.privacy.psi import canonical_ids, records_digest
from fedsilo.vfl.alignment import DIGEST_KEY_FILE, digest_key_path
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    from fedsilo.packages.splitnn.training import Party

__all__ = ["KINDS", "PREDICT", "PREPARE", "TRAIN", "SplitnnExecutor"]

PREPARE = "vfl_prepare"
TRAIN = "vfl_train"
PREDICT = "vfl_predict"
KINDS = (PREPARE, TRAIN, PREDICT)


def _numeric_problems(frame: pd.DataFrame, columns: list[str], source: str) -> list[str]:
    problems = []
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        problems.append(f"{source}: missing column(s) {missing}")
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            problems.append(f"{source}: column {column!r} is {values.dtype}, not numeric")
            continue
        nulls = int(values.isna().sum())
        if nulls:
            problems.append(f"{source}: column {column!r} has {nulls} null value(s)")
    return problems


#: in this party's state dir while it trains an attempt of a round: ``<round>:<attempt>``
IN_PROGRESS_FILE = "vfl-attempt-in-progress"


class SplitnnExecutor:
    """One party of a VFL session (see the module docstring).

    Parameters
    ----------
    model_config : SplitnnModelConfig
    data_config : SplitnnDataConfig
    dataset : LocalDataset
        Training: ``train`` and ``test`` tables. Prediction: the one table to predict
        (``train`` of the dataset, aligned with the PRL session's test table).
    context : ExecutorContext
        The client runtime's: the parties talk through its fast exchange. Its
        ``package_options`` may hold ``storage_path`` (training: the folder of the model
        part's checkpoints, default the client's state directory; prediction at the active
        party: the CSV file to write) and ``raw_output``.

    Raises
    ------
    ConfigError
        When there is no context, or the client name is not one of the data_config's.
    DataError
        Every problem of this client's columns, together.
    """

    def __init__(
        self,
        model_config: SplitnnModelConfig,
        data_config: SplitnnDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        if context is None:
            raise ConfigError(
                "A SplitNN party runs in the client runtime (fedsilo client vfl-train / "
                "vfl-predict): it talks to its peers through the server's fast exchange."
            )
        self.client_name = context.client_name
        self.columns = data_config.of(self.client_name)
        self.model_config = model_config
        self.data_config = data_config
        self.context = context
        self.mode = model_config.vfl_mode
        self.options = dict(context.package_options)
        if self.mode == "train":
            if dataset.test is None:
                raise ConfigError(
                    "A VFL training session evaluates every round on the aligned test rows: "
                    "pass --test-path (the test table linked in the PRL session)."
                )
            self.tables = {"train": dataset.train, "test": dataset.test}
        else:
            self.tables = {"test": dataset.train if dataset.test is None else dataset.test}
        wanted = list(self.columns.predictors)
        if self.columns.target is not None and self.mode == "train":
            wanted.append(self.columns.target)
        problems = []
        for table, frame in self.tables.items():
            source = "--dataset-path" if self.mode == "predict" else f"--{table}-path"
            problems.extend(_numeric_problems(frame, wanted, source))
        if problems:
            raise DataError(problems, source="the local data")
        self.batch_size = dataset.batch_size
        self._party: Party | None = None
        self._noted = False

    # ------------------------------------------------------------------ dispatch

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        if kind == PREPARE:
            return self._prepare(meta), {}
        if kind == TRAIN:
            return self._train(meta, arrays), {}
        if kind == PREDICT:
            return self._predict(meta, arrays), {}
        raise TaskError(f"splitnn clients handle task kinds {list(KINDS)}; got {kind!r}")

    def _state_root(self) -> Path:
        # The executor state directory is <root>/<session>/<client>/executor.
        return self.context.state_dir.parents[2]

    def _prepare(self, meta: dict[str, Any]) -> dict[str, Any]:
        prl_session_id = str(meta["prl_session_id"])
        id_columns = [str(c) for c in meta["id_columns"]]
        key_path = digest_key_path(self._state_root(), prl_session_id, self.client_name)
        if not key_path.exists():
            raise ConfigError(
                f"This client kept no digest key of PRL session {prl_session_id} as "
                f"{self.client_name!r} ({DIGEST_KEY_FILE} in {key_path.parent}): run the VFL "
                "session with the client name and state directory that ran the PRL session "
                "(without --remove-after-complete), or run PRL again."
            )
        key = key_path.read_bytes()
        digests = {}
        for table, frame in self.tables.items():
            source = "--dataset-path" if self.mode == "predict" else f"--{table}-path"
            ids = canonical_ids(frame, id_columns, source)
            digests[table] = records_digest(ids.records, key)
        return {
            "digests": digests,
            "n_records": {table: len(frame) for table, frame in self.tables.items()},
            "batch_size": self.batch_size,
        }

    def _storage(self, training_session_id: str) -> PartStore:
        if self.mode == "train":
            given = self.options.get("storage_path")
            root = Path(given) if given else self.context.state_dir / "parts"
            return PartStore.for_training(root, training_session_id, self.client_name)
        executor_dir = digest_key_path(
            self._state_root(), training_session_id, self.client_name
        ).parent
        return PartStore.from_pointer(executor_dir, training_session_id)

    def _positions(self, arrays: Arrays, table: str) -> np.ndarray:
        positions = arrays.get(table)
        n = len(self.tables[table])
        if positions is None or positions.ndim != 1:
            raise TaskError(f"task carries no {table!r} positions")
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise TaskError(f"{table!r} positions out of the table's {n} rows")
        return positions

    def _build(self, model_config: SplitnnModelConfig, meta: dict[str, Any]) -> Party:
        from fedsilo.packages.splitnn.training import Party, Peers

        peers = Peers.from_meta(meta)
        data_config = SplitnnDataConfig.model_validate(meta["data_config"])
        return Party(
            model_config,
            data_config,
            self.client_name,
            self.tables,
            peers,
            PeerChannel(self.context),
        )

    def _train(self, meta: dict[str, Any], arrays: Arrays) -> dict[str, Any]:
        server_round = int(meta["round"])
        if self._party is None:
            self._party = self._build(self.model_config, meta)
        store = self._storage(self.context.session_id)
        party = self._party
        party.restore(store, server_round - 1)
        positions = {t: self._positions(arrays, t) for t in ("train", "test")}
        attempt, batch_size = int(meta["attempt"]), int(meta["batch_size"])
        # A party killed during an attempt and restarted gets the same task again, but its
        # peers may have finished their part of that attempt and wait for nothing more from
        # it: it fails the attempt at once, and the workflow resends the round to everyone.
        marker = self.context.state_dir / IN_PROGRESS_FILE
        this_attempt = f"{server_round}:{attempt}"
        if marker.is_file() and marker.read_text(encoding="utf-8") == this_attempt:
            marker.unlink()
            raise RoundAbandoned(
                f"this party restarted during round {server_round} (attempt {attempt}); the "
                "round is resent to every party"
            )
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker.write_text(this_attempt, encoding="utf-8")
        started = time.perf_counter()
        metrics = party.train_round(
            server_round, attempt, positions["train"], batch_size, self.context.abort
        )
        trained = time.perf_counter()
        metrics.update(party.evaluate(attempt, positions["test"], batch_size))
        evaluated = time.perf_counter()
        store.save(server_round, party.state())
        if not self._noted:  # the folder is the session's: noting it once is enough
            store.note(self.context.state_dir)
            self._noted = True
        marker.unlink(missing_ok=True)
        # Wall times of the round's phases at the active party, for the session log.
        metrics |= {
            "train_s": trained - started,
            "evaluate_s": evaluated - trained,
            "save_s": time.perf_counter() - evaluated,
        }
        return {"metrics": metrics} if party.is_label else {}

    def _predict(self, meta: dict[str, Any], arrays: Arrays) -> dict[str, Any]:
        training_session_id = str(meta["training_session_id"])
        trained = SplitnnModelConfig.model_validate(meta["model_config"])
        party = self._build(trained, meta)
        party.restore(self._storage(training_session_id), None)
        positions = self._positions(arrays, "test")
        outputs = party.predict(int(meta["attempt"]), positions, int(meta["batch_size"]))
        if not party.is_label:
            return {}
        target = self.options.get("storage_path")
        if not target:
            raise ConfigError(
                "The active party of a VFL prediction session writes its predictions at "
                "--storage-path FILE; none was given."
            )
        assert outputs is not None
        frame = self.tables["test"]
        id_columns = [str(c) for c in meta["id_columns"]]
        table = prediction_table(
            frame.iloc[positions][id_columns].reset_index(drop=True),
            outputs,
            trained.task.type,
            raw=bool(self.options.get("raw_output", False)),
        )
        path = Path(str(target))
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        return {"n_predictions": len(table)}


def prediction_table(
    ids: pd.DataFrame, outputs: np.ndarray, task: str, *, raw: bool
) -> pd.DataFrame:
    """The prediction CSV's rows: the id columns, then the predictions.

    Classification: ``prediction`` (the class of the highest score) and ``probability_<k>``
    per class (softmax); with ``raw`` the label model's logits ``output_<k>`` instead of the
    probabilities. Regression: ``prediction`` (raw or not, the model's value).
    """
    table = ids.copy()
    if task == "regression":
        table["prediction"] = outputs[:, 0]
        return table
    table["prediction"] = outputs.argmax(axis=1)
    if raw:
        for k in range(outputs.shape[1]):
            table[f"output_{k}"] = outputs[:, k]
        return table
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    for k in range(outputs.shape[1]):
        table[f"probability_{k}"] = probabilities[:, k]
    return table
