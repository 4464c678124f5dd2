"""One party's side of SplitNN training and prediction (torch): the per-batch protocol.

A round at the active party (the label client), for each mini-batch ``b``::

    e_k   <- receive embedding (b) from each passive party k     (sealed to us)
    e_own <- own feature model on our rows of b                  (when we have predictors)
    z     =  label_model(concat(e in the data_config's order))
    loss  =  loss(z, y_b); backward
    send each passive party k the gradient d loss / d e_k        (sealed to k)
    step our optimizers

and at a passive party: ``e = feature_model(x_b)``, send ``e``, receive its gradient ``g``,
``e.backward(g)``, step. Each party's optimizer covers its own parameters only; for
per-parameter optimizers (every ``torch.optim`` one) that is the same update as one
optimizer over the whole network, which is why a split training equals the central one
(:class:`~fedsilo.packages.splitnn.model.SplitNetwork`) on the same batches up to float
rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsilo.errors import TaskError
from fedsilo.packages.splitnn.channel import PeerChannel
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.packages.splitnn.model import (
    batches,
    build_feature_model,
    build_label_model,
    label_loss,
    label_tensor,
    task_metrics,
)
from fedsilo.packages.splitnn.parts import PartStore
from fedsilo.training.optimizers import build_optimizer

__all__ = ["EMBEDDING", "GRADIENT", "Party", "Peers"]

EMBEDDING = "embedding"
GRADIENT = "gradient"
TEST_EMBEDDING = "test_embedding"
PREDICT_EMBEDDING = "predict_embedding"
START = "start"
#: the most embedding bytes one evaluation or prediction message carries (the relay takes up
#: to 16 MiB): the 3,600 test rows of a 5-wide embedding are one message, not four
EVALUATION_MESSAGE_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Peers:
    """Who is who in the session: participant ids by client name, and the label client."""

    ids: dict[str, str]
    label_client: str

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Peers:
        try:
            return cls(
                {str(k): str(v) for k, v in meta["peers"].items()}, str(meta["label_client"])
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise TaskError(f"the task names no peers and label client: {exc!r}") from exc

    @property
    def label_id(self) -> str:
        return self.ids[self.label_client]


def _matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return np.array(frame[columns].to_numpy(dtype=np.float32), order="C", copy=True)


class Party:
    """This client's parts and data for one session (see the module docstring)."""

    def __init__(
        self,
        model_config: SplitnnModelConfig,
        data_config: SplitnnDataConfig,
        client_name: str,
        tables: Mapping[str, pd.DataFrame],
        peers: Peers,
        channel: PeerChannel,
    ) -> None:
        self.model_config = model_config
        self.task = model_config.task
        self.client_name = client_name
        self.columns = data_config.of(client_name)
        self.is_label = self.columns.label_client
        self.order = data_config.featured_clients
        self.passives = [n for n in data_config.passive_clients]
        self.peers = peers
        self.channel = channel
        self.inputs = {t: _matrix(f, list(self.columns.predictors)) for t, f in tables.items()}
        self.labels: np.ndarray | None = None
        if self.is_label and "train" in tables and self.columns.target is not None:
            self.labels = tables["train"][self.columns.target].to_numpy()
            self.test_labels = tables["test"][self.columns.target].to_numpy()
            # Built once, not per batch: the loss module and the targets as the loss takes
            # them (a batch indexes them; the values are those label_tensor gives per batch).
            self._targets = label_tensor(self.task, self.labels)
        self._loss = label_loss(self.task)
        self.feature_model: torch.nn.Module | None = None
        self.label_model: torch.nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        #: the round whose end the parts in memory hold (None: unknown, load from disk)
        self.round: int | None = None
        self._start()

    def _start(self) -> None:
        """The seeded parts and fresh optimizers (the state before round 1)."""
        model_config = self.model_config
        self.feature_model = (
            build_feature_model(model_config, self.client_name) if self.columns.predictors else None
        )
        self.label_model = build_label_model(model_config) if self.is_label else None
        self.optimizers = {}
        if model_config.optimizer is not None:
            for name, module in self._modules().items():
                self.optimizers[name] = build_optimizer(model_config.optimizer, module.parameters())
        self.round = 0

    def _modules(self) -> dict[str, torch.nn.Module]:
        found: dict[str, torch.nn.Module] = {}
        if self.feature_model is not None:
            found["feature_model"] = self.feature_model
        if self.label_model is not None:
            found["label_model"] = self.label_model
        return found

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            **{name: module.state_dict() for name, module in self._modules().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
        }

    def restore(self, store: PartStore, server_round: int | None) -> None:
        """Hold the parts at the end of ``server_round`` (0: the seeded start; None: the
        trained model), from memory when they are there, else from ``store``."""
        if server_round is not None and server_round == self.round:
            return
        if server_round == 0:
            self._start()
            return
        state = store.load(server_round)
        for name, module in self._modules().items():
            if name not in state:
                raise TaskError(f"the checkpoint at {store.folder} holds no {name}")
            module.load_state_dict(state[name])
        for name, optimizer in self.optimizers.items():
            saved = state.get("optimizers", {}).get(name)
            if saved is not None:
                optimizer.load_state_dict(saved)
        self.round = server_round

    # --------------------------------------------------------------- training

    def train_round(
        self,
        server_round: int,
        attempt: int,
        positions: np.ndarray,
        batch_size: int,
        abort: threading.Event,
    ) -> dict[str, float]:
        """One pass over the aligned training rows (messages stamped ``attempt``, see
        :mod:`~.channel`); the active party returns the mean training loss
        (``train_loss``)."""
        self.round = None  # the parts change from here on: a failure leaves them unknown
        self.announce(attempt)
        inputs = self.inputs["train"]
        losses: list[float] = []
        for b, idx in enumerate(
            batches(len(positions), batch_size, self.model_config.seed, server_round)
        ):
            if abort.is_set():
                raise TaskError("the session ended during the round")
            rows = positions[idx]
            if self.is_label:
                losses.append(self._label_step(attempt, b, inputs[rows], rows))
            else:
                self._passive_step(attempt, b, inputs[rows])
        self.round = server_round
        if not self.is_label:
            return {}
        return {"train_loss": float(np.mean(losses)) if losses else 0.0}

    def announce(self, attempt: int) -> None:
        """At the active party: tell every passive party that ``attempt`` began (a passive
        party still serving an older attempt abandons it; see :mod:`~.channel`)."""
        if self.is_label:
            for i, name in enumerate(self.passives):
                last = i == len(self.passives) - 1  # then the first embeddings are awaited
                self.channel.send(self.peers.ids[name], START, attempt, -1, {}, answered=last)

    def _passive_step(self, attempt: int, b: int, x: np.ndarray) -> None:
        assert self.feature_model is not None
        embedding = self.feature_model(torch.from_numpy(x))
        self.channel.send(
            self.peers.label_id,
            EMBEDDING,
            attempt,
            b,
            {"e": embedding.detach().numpy()},
            answered=True,
        )
        got = self.channel.receive([self.peers.label_id], GRADIENT, attempt, b)
        gradient = _tensor(got[self.peers.label_id], "g", embedding.shape)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()
        embedding.backward(gradient)
        for optimizer in self.optimizers.values():
            optimizer.step()

    def _label_step(self, attempt: int, b: int, x: np.ndarray, rows: np.ndarray) -> float:
        assert self.label_model is not None and self.labels is not None
        ids = [self.peers.ids[name] for name in self.passives]
        received = self.channel.receive(ids, EMBEDDING, attempt, b)
        passive: dict[str, torch.Tensor] = {}
        for name in self.passives:
            passive[name] = _tensor(received[self.peers.ids[name]], "e", (len(rows), None))
            passive[name].requires_grad_(True)
        embeddings = self._side_by_side(passive, x)
        outputs = self.label_model(embeddings)
        loss = self._loss(outputs, self._targets[torch.from_numpy(rows)])
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()
        loss.backward()
        stepped = False

        def step() -> None:
            nonlocal stepped
            for optimizer in self.optimizers.values():
                optimizer.step()
            stepped = True

        for i, (name, tensor) in enumerate(passive.items()):
            assert tensor.grad is not None
            last = i == len(passive) - 1
            # Only the last send waits for an answer (the next batch's embeddings, or the
            # test embeddings): an earlier one would hold back the later parties' gradients.
            # Our own step runs while that answer is being made: it reads only our gradients
            # (already computed), and our next forward comes after it either way.
            self.channel.send(
                self.peers.ids[name],
                GRADIENT,
                attempt,
                b,
                {"g": tensor.grad.numpy()},
                answered=last,
                meanwhile=step if last else None,
            )
        if not stepped:
            step()
        return float(loss.detach())

    def _side_by_side(self, passive: Mapping[str, torch.Tensor], x: np.ndarray) -> torch.Tensor:
        parts = []
        for name in self.order:
            if name == self.client_name:
                assert self.feature_model is not None
                parts.append(self.feature_model(torch.from_numpy(x)))
            else:
                parts.append(passive[name])
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------- inference

    def _forward_rows(
        self, kind: str, attempt: int, table: str, positions: np.ndarray, batch_size: int
    ) -> np.ndarray | None:
        """The label model's outputs on ``positions`` of ``table`` (active party), the
        passive parties sending their embeddings chunk by chunk; None at a passive party."""
        inputs = self.inputs[table]
        chunks = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
        with torch.no_grad():
            if not self.is_label:
                self._send_embeddings(kind, attempt, [inputs[rows] for rows in chunks])
                return None
            assert self.label_model is not None
            outputs = []
            rows_of = {name: _Rows(self, name, kind, attempt) for name in self.passives}
            for rows in chunks:
                passive = {name: rows_of[name].take(len(rows)) for name in self.passives}
                outputs.append(self.label_model(self._side_by_side(passive, inputs[rows])).numpy())
            for taken in rows_of.values():
                taken.finish()
            width = self.model_config.split.label_model.params.output_size
            return np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)

    def _send_embeddings(self, kind: str, attempt: int, chunks: list[np.ndarray]) -> None:
        """At a passive party: the embeddings of ``chunks`` (computed chunk by chunk, as the
        active party applies the label model), several chunks to a message of at most
        :data:`EVALUATION_MESSAGE_BYTES`: one request instead of one per chunk."""
        assert self.feature_model is not None
        pending: list[np.ndarray] = []
        size = 0
        message = 0
        for c, x in enumerate(chunks):
            embedding = self.feature_model(torch.from_numpy(x)).numpy()
            pending.append(embedding)
            size += embedding.nbytes
            following = chunks[c + 1] if c + 1 < len(chunks) else None
            if following is None or size + embedding.nbytes > EVALUATION_MESSAGE_BYTES:
                self.channel.send(
                    self.peers.label_id, kind, attempt, message, {"e": np.concatenate(pending)}
                )
                message, pending, size = message + 1, [], 0

    def evaluate(
        self, server_round: int, positions: np.ndarray, batch_size: int
    ) -> dict[str, float]:
        """The active party's ``test_*`` metrics on the aligned test rows; {} elsewhere."""
        outputs = self._forward_rows(TEST_EMBEDDING, server_round, "test", positions, batch_size)
        if outputs is None:
            return {}
        return task_metrics(self.task, outputs, self.test_labels[positions])

    def predict(self, attempt: int, positions: np.ndarray, batch_size: int) -> np.ndarray | None:
        """The label model's outputs on the aligned rows (active party); None elsewhere.
        (No ``start`` poke: a passive party only sends here, it never waits.)"""
        return self._forward_rows(PREDICT_EMBEDDING, attempt, "test", positions, batch_size)


class _Rows:
    """At the active party: one passive party's evaluation embeddings, row by row, taking
    its messages (:meth:`Party._send_embeddings`) as they are needed."""

    def __init__(self, party: Party, name: str, kind: str, attempt: int) -> None:
        self.party = party
        self.sender = party.peers.ids[name]
        self.kind = kind
        self.attempt = attempt
        self.messages = 0
        self.held = torch.zeros((0, 0))
        self.at = 0

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` rows' embeddings."""
        if self.at == len(self.held):
            got = self.party.channel.receive([self.sender], self.kind, self.attempt, self.messages)
            self.held = _tensor(got[self.sender], "e", (None, None))
            self.messages += 1
            self.at = 0
        if len(self.held) - self.at < n:
            raise TaskError(
                f"participant {self.sender} sent {len(self.held) - self.at} embedding rows in "
                f"message {self.messages - 1}; expected a whole chunk of {n}"
            )
        rows = self.held[self.at : self.at + n]
        self.at += n
        return rows

    def finish(self) -> None:
        if self.at != len(self.held):
            raise TaskError(
                f"participant {self.sender} sent {len(self.held) - self.at} embedding rows "
                "more than the aligned rows"
            )


def _tensor(
    arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int | None, ...]
) -> torch.Tensor:
    array = arrays.get(name)
    if (
        array is None
        or array.dtype != np.float32
        or array.ndim != len(shape)
        or any(
            want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
        )
        or not np.isfinite(array).all()
    ):
        raise TaskError(
            f"a peer sent {name!r} of "
            + ("nothing" if array is None else f"dtype {array.dtype}, shape {array.shape}")
            + f"; expected finite float32 of shape {shape}"
        )
    return torch.from_numpy(np.array(array))
