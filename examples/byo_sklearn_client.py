"""Bring your own client code (seed 001): a scikit-learn LogisticRegression silo.

Each silo runs its own ``get_parameters`` / ``fit`` / ``evaluate`` (Flower's NumPyClient
shape) and joins a session of package ``arrays``; the server only averages the arrays::

    FEDSILO_TOKEN=... python examples/byo_sklearn_client.py --url http://127.0.0.1:8000 \\
        --session 3f9a0c12de --silo 0 --num-silos 2

The data is scikit-learn's bundled digits (8x8 images, 10 classes), pixels scaled by 1/16 (a
fixed, public preprocessing every silo applies alike); 25 % is held out as the test set only
the analyst holds, the rest split evenly across the silos, each keeping 20 % of its part to
evaluate on.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
NUM_FEATURES = 64


def split_digits(num_silos: int) -> tuple[list[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]:
    """``([(x_train, y_train, x_val, y_val) per silo], (x_test, y_test))``, reproducibly."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_pool, x_test, y_pool, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    order = np.random.default_rng(1).permutation(len(y_pool))
    silos = []
    for part in np.array_split(order, num_silos):
        x_train, x_val, y_train, y_val = train_test_split(
            x_pool[part], y_pool[part], test_size=0.2, random_state=2
        )
        silos.append((x_train, y_train, x_val, y_val))
    return silos, (x_test, y_test)


def new_model(max_iter: int = 100) -> LogisticRegression:
    """The model every silo and the central reference train (warm-started from the global
    parameters each round)."""
    model = LogisticRegression(C=1.0, max_iter=max_iter, warm_start=True)
    # scikit-learn creates coef_ only in fit; the federation needs them before (seed 001's
    # set_initial_params).
    model.classes_ = np.arange(NUM_CLASSES)
    model.coef_ = np.zeros((NUM_CLASSES, NUM_FEATURES))
    model.intercept_ = np.zeros(NUM_CLASSES)
    return model


def central_accuracy(num_silos: int = 2) -> float:
    """Held-out accuracy of the same model trained on all the silos' training rows pooled
    (the reference a federation is measured against)."""
    silos, (x_test, y_test) = split_digits(num_silos)
    model = LogisticRegression(C=1.0, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(np.vstack([s[0] for s in silos]), np.concatenate([s[1] for s in silos]))
    return float(model.score(x_test, y_test))


def set_parameters(model: LogisticRegression, parameters: list[np.ndarray]) -> None:
    model.coef_ = np.array(parameters[0], dtype=np.float64)
    model.intercept_ = np.array(parameters[1], dtype=np.float64)


class LogisticRegressionClient:
    """The seed's client: ``get_parameters``, ``fit``, ``evaluate`` around scikit-learn."""

    def __init__(self, x_train: Any, y_train: Any, x_val: Any, y_val: Any) -> None:
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self.model = new_model()

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [self.model.coef_, self.model.intercept_]

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, float]]:
        set_parameters(self.model, parameters)
        self.model.max_iter = int(config.get("max_iter", 100))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs may stop at max_iter by design
            self.model.fit(self.x_train, self.y_train)
        accuracy = float(self.model.score(self.x_train, self.y_train))
        return self.get_parameters(config), len(self.x_train), {"accuracy": accuracy}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        set_parameters(self.model, parameters)
        probabilities = self.model.predict_proba(self.x_val)
        loss = float(log_loss(self.y_val, probabilities, labels=np.arange(NUM_CLASSES)))
        accuracy = float(self.model.score(self.x_val, self.y_val))
        return loss, len(self.x_val), {"accuracy": accuracy}


def main() -> int:
    import fedsilo.client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--token",
        default=os.environ.get("FEDSILO_TOKEN"),
        help="a token with the client scope (default: $FEDSILO_TOKEN)",
    )
    parser.add_argument("--session", required=True)
    parser.add_argument("--silo", type=int, required=True)
    parser.add_argument("--num-silos", type=int, default=2)
    parser.add_argument("--client-name", default=None)
    args = parser.parse_args()
    if not args.token:
        parser.error("give --token or set FEDSILO_TOKEN")
    silos, _ = split_digits(args.num_silos)
    x_train, y_train, x_val, y_val = silos[args.silo]
    status = fedsilo.client.start_client(
        args.url,
        args.token,
        args.session,
        client=LogisticRegressionClient(x_train, y_train, x_val, y_val),
        client_name=args.client_name or f"silo{args.silo}",
        num_examples=len(x_train),
        num_test_examples=len(x_val),
        on_event=print,
    )
    print(f"session ended: {status}")
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
