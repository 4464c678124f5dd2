"""The SDK's initial-model upload: ``client.create_fl_session(..., initial_model=...)`` and
``session.upload_initial_model(...)``, against the in-thread server (real HTTP).

Each accepted form (a .safetensors path, its bytes, numpy arrays, a torch ``state_dict()``)
must reach the server as the same tensors: the digest the server answers is the SHA-256 of
the bytes sent, and the stored frame decodes to the arrays given.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import fedsilo
from fedsilo.errors import ConflictError, ValidationError
from fedsilo.sdk.initial_model import initial_model_bytes
from fedsilo.server.initial_model import model_key
from fedsilo.wire import decode_frame

MODEL_CONFIG = {
    "strategy": {"name": "iter_avg", "params": {}},
    "model": {"params": {"input_size": 3, "hidden_layer_sizes": [], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
}
DATA_CONFIG = {"predictors": ["a", "b", "c"], "target": "y"}


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "output.weight": rng.standard_normal((2, 3)).astype(np.float32),
        "output.bias": np.zeros(2, np.float32),
    }


def create(client: fedsilo.Client, initial_model: Any = None) -> fedsilo.Session:
    return client.create_fl_session(
        name="fusion",
        min_num_clients=1,
        num_rounds=1,
        package_name="ffnet",
        model_config=MODEL_CONFIG,
        data_config=DATA_CONFIG,
        initial_model=initial_model,
    )


def stored(server: Any, sid: str) -> dict[str, np.ndarray]:
    data = server.app_state.artifacts.read_bytes(model_key(sid))
    assert data is not None
    return decode_frame(data)[0]


def test_every_form_of_initial_model_reaches_the_server_as_its_tensors(
    thread_server: Any, scoped_tokens: Any, tmp_path: Path
) -> None:
    token = scoped_tokens.analyst(thread_server.url, thread_server.token, "meera")
    given = arrays()
    path = tmp_path / "initial.safetensors"
    save_file(given, str(path))
    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(given["output.weight"]))
        module.bias.zero_()
    state = {f"output.{k}": v for k, v in module.state_dict().items()}
    with fedsilo.connect(thread_server.url, token) as client:
        for source in (path, str(path), path.read_bytes(), given, state):
            session = create(client, source)
            for name, array in stored(thread_server, session.id).items():
                np.testing.assert_array_equal(array, given[name])
        # upload_initial_model answers what the server stored, the digest of the bytes sent
        session = create(client)
        answer = session.upload_initial_model(given)
        sent = initial_model_bytes(given)
        assert answer.sha256 == hashlib.sha256(sent).hexdigest()
        assert answer.shapes == {"output.bias": [2], "output.weight": [2, 3]}
        session.start()
        with pytest.raises(ConflictError, match="before the session starts"):
            session.upload_initial_model(given)


def test_refusals_arrive_as_the_sdks_errors(thread_server: Any) -> None:
    with fedsilo.connect(thread_server.url, thread_server.token) as client:
        with pytest.raises(ValidationError, match="expected a safetensors state dict"):
            create(client, b"definitely not safetensors")
        with pytest.raises(TypeError, match=r"state_dict\(\)"):
            create(client, torch.nn.Linear(3, 2))
        with pytest.raises(TypeError, match="'mask' has dtype bool"):
            create(client, {"mask": np.ones(2, bool)})
