"""fedsilo as a model-fusion service over plain REST (seed 002), with ``httpx`` only.

The seed's aggregator calls map onto fedsilo's session API (prefix ``/api/v1``)::

    start-aggregator   POST /sessions          package + fusion
                       PUT  /sessions/{id}/initial-model   the initial model (safetensors)
                       POST /sessions/{id}/start
    start-party        parties join: ``fedsilo client train --session-id {id} ...`` on
                       each silo (or fedsilo.client.start_client with your own code)
    train              GET  /sessions/{id}     until completed
    global_model       GET  /sessions/{id}/model?format=json   (or the binary frame)
    stop               POST /sessions/{id}/cancel

The initial model is a safetensors state dict (``--model-file``; e.g. written with
``safetensors.torch.save_file(module.state_dict(), path)``) of the package's model
(``--package``, default ffnet). It is uploaded as the binary frame
(``application/octet-stream``) to the created session; the session starts from it, and the
server checks it against the package's names and shapes when the session starts (a tensor
that does not fit fails the session, naming it). No pickled module is read or sent.

Fusion is ``fedavg`` (example-weighted mean) or ``iter_avg`` (plain mean); ``--fraction-fit``
below 1 trains a random subset of the parties each round. Example::

    FEDSILO_TOKEN=... python examples/model_fusion_rest.py --url http://127.0.0.1:8000 \\
        --model-file ffnet_15_6_2.safetensors --model-params 15,6,2 --fusion fedavg \\
        --num-parties 3 --rounds 3 --fraction-fit 0.67 --out global_model.json

It prints the session id for the parties, waits for them, trains, and writes the global
model's weights as JSON (and the frame beside it). ``--stop-after-round N`` stops the
federation once round N is recorded instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from safetensors.numpy import load_file, save

ENDED = {"completed", "failed", "canceled"}


def connect(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/") + "/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def checked(response: httpx.Response) -> Any:
    """The JSON body, or exit with the server's ``detail``."""
    if response.is_error:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        request = response.request
        sys.exit(f"{request.method} {request.url.path}: {response.status_code} {detail}")
    return response.json()


def start_aggregator(
    http: httpx.Client,
    model_file: Path,
    *,
    package: str,
    model_params: list[int],
    fusion: str,
    num_parties: int,
    rounds: int,
    epochs: int,
    learning_rate: float,
    optimizer: str,
    fraction_fit: float,
    predictors: list[str],
    target: str,
) -> str:
    """Create the session, upload its initial model and start it (the seed's
    ``start-aggregator``); its id."""
    state_dict = load_file(str(model_file))  # read as arrays: a safetensors file, not a pickle
    input_size, *hidden, output_size = model_params
    model_config = {
        "strategy": {"name": fusion, "params": {"fraction_fit": fraction_fit}},
        "model": {
            "params": {
                "input_size": input_size,
                "hidden_layer_sizes": hidden,
                "output_size": output_size,
            }
        },
        "ml_task": {"type": "classification", "params": {}},
        "optimizer": {"name": optimizer, "params": {"learning_rate": learning_rate}},
        "local_epochs": epochs,
    }
    body = {
        "name": f"model fusion ({fusion})",
        "kind": "hfl",
        "package_name": package,
        "min_num_clients": num_parties,
        "num_rounds": rounds,
        "model_config": model_config,
        "data_config": {"predictors": predictors, "target": target},
    }
    sid = str(checked(http.post("/sessions", json=body))["id"])
    stored = checked(
        http.put(
            f"/sessions/{sid}/initial-model",
            content=save(state_dict),
            headers={"Content-Type": "application/octet-stream"},
        )
    )
    print(f"initial model {model_file.name}: sha256 {stored['sha256']}", flush=True)
    checked(http.post(f"/sessions/{sid}/start"))
    return sid


def wait_for_parties(http: httpx.Client, sid: str, num_parties: int, timeout: float) -> list[str]:
    """The parties' names once ``num_parties`` joined (the seed's ``start-party`` replies)."""
    deadline = time.monotonic() + timeout
    while True:
        joined = [p["client_name"] for p in checked(http.get(f"/sessions/{sid}/participants"))]
        if len(joined) >= num_parties:
            return joined
        if time.monotonic() > deadline:
            sys.exit(f"only {len(joined)} of {num_parties} parties joined within {timeout:g} s")
        print(f"{num_parties - len(joined)} party(ies) left to register", flush=True)
        time.sleep(1)


def train(http: httpx.Client, sid: str, timeout: float, stop_after_round: int | None) -> str:
    """Wait for the session to end (or stop it after a round); its final status."""
    deadline = time.monotonic() + timeout
    while True:
        session = checked(http.get(f"/sessions/{sid}"))
        if session["status"] in ENDED:
            return str(session["status"])
        if stop_after_round is not None and session["round"] >= stop_after_round:
            return str(stop(http, sid)["status"])
        if time.monotonic() > deadline:
            stop(http, sid)
            sys.exit(f"session {sid} did not finish within {timeout:g} s; stopped it")
        time.sleep(0.5)


def global_model(http: httpx.Client, sid: str) -> dict[str, Any]:
    """The global model's weights as JSON (the seed's ``global_model``)."""
    body: dict[str, Any] = checked(http.get(f"/sessions/{sid}/model", params={"format": "json"}))
    return body


def global_model_frame(http: httpx.Client, sid: str) -> bytes:
    """The same model as the binary safetensors frame (``fedsilo.wire.decode_frame``)."""
    response = http.get(f"/sessions/{sid}/model")
    if response.is_error:
        checked(response)
    return response.content


def stop(http: httpx.Client, sid: str) -> dict[str, Any]:
    """End the federation (the seed's ``stop``)."""
    body: dict[str, Any] = checked(http.post(f"/sessions/{sid}/cancel"))
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default=os.environ.get("FEDSILO_TOKEN"))
    parser.add_argument("--model-file", type=Path, required=True, help="safetensors state dict")
    parser.add_argument("--package", default="ffnet")
    parser.add_argument("--model-params", default="15,6,2", help="input,hidden...,output sizes")
    parser.add_argument("--fusion", choices=["fedavg", "iter_avg"], default="fedavg")
    parser.add_argument("--num-parties", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=0.2)
    parser.add_argument("--optimizer", default="SGD")
    parser.add_argument("--fraction-fit", type=float, default=1.0)
    parser.add_argument("--predictors", default=",".join(f"x{i}" for i in range(15)))
    parser.add_argument("--target", default="y")
    parser.add_argument("--stop-after-round", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--id-file", type=Path, default=None, help="write the session id here")
    parser.add_argument("--out", type=Path, default=Path("global_model.json"))
    args = parser.parse_args()
    if not args.token:
        parser.error("give --token or set FEDSILO_TOKEN")
    with connect(args.url, args.token) as http:
        sid = start_aggregator(
            http,
            args.model_file,
            package=args.package,
            model_params=[int(v) for v in args.model_params.split(",")],
            fusion=args.fusion,
            num_parties=args.num_parties,
            rounds=args.rounds,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            fraction_fit=args.fraction_fit,
            predictors=args.predictors.split(","),
            target=args.target,
        )
        print(f"aggregator_id {sid}", flush=True)
        if args.id_file is not None:
            args.id_file.write_text(sid)
        parties = wait_for_parties(http, sid, args.num_parties, args.timeout)
        print(f"parties registered: {', '.join(parties)}", flush=True)
        status = train(http, sid, args.timeout, args.stop_after_round)
        print(f"session {sid} {status}", flush=True)
        if status != "completed":
            return 0 if status == "canceled" and args.stop_after_round is not None else 1
        weights = global_model(http, sid)
        args.out.write_text(json.dumps(weights))
        args.out.with_suffix(".frame").write_bytes(global_model_frame(http, sid))
        print(f"global model of round {weights['round']} written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
