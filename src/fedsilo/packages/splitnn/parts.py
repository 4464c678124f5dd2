"""Where a party keeps its part of the split network: its storage path, never the server.

Training writes, under ``--storage-path DIR``, a folder per session and client::

    DIR/<training session>-<client>/round-0001.pt ... round-NNNN.pt   (each round's end)
    DIR/<training session>-<client>/model.pt                           (the last round's)

each a ``torch.save`` of ``{"round", "feature_model", "label_model", "optimizers"}`` (the
parts this party holds). A resumed round starts from the file of the round before it, so
a restart -- of the server, which resends the round, or of this client -- continues from the
last completed round. The party also notes that folder in its client state directory
(``splitnn-part.json`` in the executor state of the training session), which is where a
later prediction session of the same client finds it. Files are read back with
``torch.load(weights_only=True)``: tensors and plain containers only, nothing executed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError, TaskError

__all__ = ["POINTER_FILE", "PartStore"]

#: the file, in a training participant's executor state directory, naming its part's folder
POINTER_FILE = "splitnn-part.json"


class PartStore:
    """One party's checkpoints of one training session.

    Parameters
    ----------
    folder : Path
        ``DIR/<training session>-<client>``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_training(cls, storage: Path, session_id: str, client_name: str) -> PartStore:
        return cls(storage / f"{session_id}-{client_name}")

    @classmethod
    def from_pointer(cls, state_dir: Path, training_session_id: str) -> PartStore:
        """The store a training session's participant noted in its state directory.

        Raises
        ------
        ConfigError
            When this client (with this state directory) holds no part of that session.
        """
        pointer = state_dir / POINTER_FILE
        if not pointer.exists():
            raise ConfigError(
                f"This client holds no model part of training session {training_session_id}: "
                f"no {POINTER_FILE} in {state_dir.parent}. Predict with the same client name "
                "and state directory ($FEDSILO_CLIENT_STATE_DIR) that trained, without "
                "--remove-after-complete."
            )
        folder = Path(json.loads(pointer.read_text(encoding="utf-8"))["folder"])
        return cls(folder)

    def note(self, state_dir: Path) -> None:
        """Record this store's folder in ``state_dir`` (for prediction sessions)."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = state_dir / (POINTER_FILE + ".tmp")
        tmp.write_text(json.dumps({"folder": str(self.folder.resolve())}), encoding="utf-8")
        os.replace(tmp, state_dir / POINTER_FILE)

    def round_path(self, server_round: int) -> Path:
        return self.folder / f"round-{server_round:04d}.pt"

    @property
    def model_path(self) -> Path:
        return self.folder / "model.pt"

    def save(self, server_round: int, state: dict[str, Any]) -> None:
        """Write the end of round ``server_round`` (atomically) and make it ``model.pt``."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.round_path(server_round)
        tmp = path.with_suffix(".tmp")
        torch.save({"round": server_round, **state}, tmp)
        os.replace(tmp, path)
        # model.pt is the same bytes: a hard link (one write per round, not two); a file
        # system without hard links gets a copy. A round file is only ever replaced, never
        # written in place, so the link keeps the bytes it was made with.
        linked = self.model_path.with_suffix(".tmp")
        linked.unlink(missing_ok=True)
        try:
            os.link(path, linked)
        except OSError:
            shutil.copyfile(path, linked)
        os.replace(linked, self.model_path)

    def load(self, server_round: int | None = None) -> dict[str, Any]:
        """The state at the end of ``server_round`` (None: the last one, ``model.pt``).

        Raises
        ------
        TaskError
            When that file is missing: the storage path is not the one this party trained
            with, or it was removed.
        """
        import torch

        path = self.model_path if server_round is None else self.round_path(server_round)
        if not path.exists():
            what = "the trained model part" if server_round is None else f"round {server_round}"
            raise TaskError(
                f"no checkpoint of {what} at {path}: pass the --storage-path this client "
                "trained with"
            )
        state: dict[str, Any] = torch.load(path, weights_only=True)
        return state
