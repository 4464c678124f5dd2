"""A session's trained model, as downloaded from the server.

The server serves a model as one frame (:func:`fedsilo.wire.encode_frame`): the named weight
arrays plus a :class:`~fedsilo.wire.ModelMeta` header saying which package made it and with
which configs. :class:`Model` keeps those bytes (so :meth:`Model.save` / :meth:`Model.load`
round-trip exactly) and hands the arrays to the package's ``export`` for the user objects
(PyTorch module, predictions, scikit-learn estimator).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.errors import FedsiloError, WireError
from fedsilo.wire import Arrays, ModelMeta, decode_frame, encode_frame, parse_header

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from fedsilo.federation import ExportedModel

__all__ = ["Model", "NamedArrays"]


class NamedArrays(dict[str, "np.ndarray"]):
    """A model's arrays by name: a dict that is also callable (``arrays()`` returns a plain
    dict copy), so ``model.arrays["w"]`` and ``model.arrays()`` both read them."""

    def __call__(self) -> Arrays:
        return dict(self)


class Model:
    """A trained model: weight arrays, their metadata, and the package's export of them.

    Build one with :meth:`Session.model() <fedsilo.sdk.session.Session.model>`,
    :meth:`from_frame` or :meth:`load`.

    Parameters
    ----------
    arrays : dict of str to ndarray
        The model's named weights (e.g. ``"layers.0.weight"`` of shape (6, 15)).
    meta : ModelMeta
        Session, package, round and the configs the model was trained with.
    frame : bytes, optional
        The frame the model came in; re-encoded from ``arrays`` and ``meta`` when omitted.
    """

    def __init__(self, arrays: Arrays, meta: ModelMeta, frame: bytes | None = None) -> None:
        self._arrays = arrays
        self._meta = meta
        self._frame = frame

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_frame(cls, data: bytes) -> Model:
        """Decode a model frame (as served by ``GET /sessions/{sid}/model``).

        Raises
        ------
        WireError
            When the bytes are not a frame or the header is not a ModelMeta.
        """
        arrays, header = decode_frame(data)
        meta = parse_header(ModelMeta, header, "model frame header")
        return cls(arrays, meta, frame=bytes(data))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Read a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        WireError
            When the file is not a fedsilo model frame; the message names the file.
        """
        source = Path(path)
        data = source.read_bytes()
        try:
            return cls.from_frame(data)
        except WireError as exc:
            raise WireError(
                f"{source} is not a fedsilo model file (expected a frame written by "
                f"Model.save): {exc}"
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model frame (safetensors bytes with the metadata) to ``path``.

        The file is plain safetensors, so other safetensors readers load the weights too;
        :meth:`load` restores the whole :class:`Model`.

        Returns
        -------
        Path
            The path written.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.frame)
        return target

    # ------------------------------------------------------------------ data

    @property
    def meta(self) -> ModelMeta:
        return self._meta

    @property
    def arrays(self) -> NamedArrays:
        """The named weight arrays (the model's own; copy before mutating).

        Also callable, as the bring-your-own-client docs write it: ``model.arrays()`` is a
        plain dict copy of the same arrays.
        """
        return NamedArrays(self._arrays)

    def parameters(self) -> list[np.ndarray] | dict[str, np.ndarray]:
        """The arrays as a client's ``fit`` takes them (package ``arrays``): a list when the
        names are ``"0"``, ``"1"``, ... (a list of arrays was sent), else the dict."""
        names = list(self._arrays)
        if names and all(name.isdecimal() for name in names):
            return [self._arrays[name] for name in sorted(names, key=int)]
        return dict(self._arrays)

    @property
    def session_id(self) -> str:
        return self._meta.session_id

    @property
    def package_name(self) -> str:
        return self._meta.package_name

    @property
    def round(self) -> int:
        """The round whose global model this is (the best round under save_best_model)."""
        return self._meta.round

    @property
    def frame(self) -> bytes:
        """The model as frame bytes, exactly as downloaded when it was downloaded."""
        if self._frame is None:
            self._frame = encode_frame(self._arrays, self._meta)
        return self._frame

    # ------------------------------------------------------------------ export

    @cached_property
    def exported(self) -> ExportedModel:
        """The package's export of this model (built on first use, then reused)."""
        from fedsilo.federation import get_package

        package = get_package(self._meta.package_name)
        model_config = package.parse_model_config(self._meta.model_config_)
        data_config = package.parse_data_config(self._meta.data_config)
        return package.export(model_config, data_config, self._arrays, dict(self._meta.meta))

    def as_pytorch(self) -> torch.nn.Module:
        """The model as a ``torch.nn.Module`` (in eval mode as the package exports it)."""
        return self.exported.as_pytorch()

    def as_sklearn(self) -> Any:
        """The model as a scikit-learn estimator, for packages that offer one.

        Raises
        ------
        FedsiloError
            When the package has no scikit-learn export.
        """
        exported = self.exported
        as_sklearn = getattr(exported, "as_sklearn", None)
        if as_sklearn is None:
            raise FedsiloError(
                f"The {self._meta.package_name!r} package has no scikit-learn export; "
                "expected a package with as_sklearn() (use as_pytorch() or predict() here)."
            )
        return as_sklearn()

    def summary(self) -> pd.DataFrame:
        """The coefficient table (estimates, standard errors, tests, intervals), for packages
        that offer one (``glm`` fitted by Newton without penalty).

        Raises
        ------
        FedsiloError
            When the package has no summary (or, from the package, when this model cannot
            have one, e.g. a penalized fit).
        """
        summary = getattr(self.exported, "summary", None)
        if summary is None:
            raise FedsiloError(
                f"The {self._meta.package_name!r} package has no coefficient summary; "
                "expected a package with summary() such as 'glm'."
            )
        table: pd.DataFrame = summary()
        return table

    def predict(self, data: pd.DataFrame) -> Any:
        """Predict for the rows of ``data``.

        Parameters
        ----------
        data : DataFrame of shape (n_samples, n_columns)
            Must hold the data_config's predictor columns; other columns are ignored.

        Returns
        -------
        The package's predictions, typically an ndarray of shape (n_samples,) or
        (n_samples, n_outputs).
        """
        return self.exported.predict(data)

    def predict_proba(self, data: pd.DataFrame) -> Any:
        """Class probabilities for the rows of ``data``, for classifiers.

        Shaped as scikit-learn's ``predict_proba``: for a binary classifier (glm
        ``logistic``, gbm and ffnet ``classification``) an ndarray of shape (n_samples, 2)
        whose columns are P(class 0), P(class 1) and whose rows sum to 1 (ffnet: shape
        (n_samples, output_size)); for linear_inference's ``LogitRegInference`` bundle, as
        scikit-learn's ``MultiOutputClassifier``, a list of one (n_samples, 2) array per
        chunked predictor.

        Parameters
        ----------
        data : DataFrame of shape (n_samples, n_columns)
            Must hold the data_config's predictor columns; other columns are ignored.

        Raises
        ------
        FedsiloError
            When the package has no class probabilities (``ConfigError``, from the package,
            when this model is a regression).
        """
        predict_proba = getattr(self.exported, "predict_proba", None)
        if predict_proba is None:
            raise FedsiloError(
                f"The {self._meta.package_name!r} package has no class probabilities; "
                "expected a classifier package (glm, gbm, ffnet, linear_inference). "
                "Use predict() here."
            )
        return predict_proba(data)

    def __repr__(self) -> str:
        n_weights = sum(int(array.size) for array in self._arrays.values())
        return (
            f"Model(session_id={self.session_id!r}, package_name={self.package_name!r}, "
            f"round={self.round}, arrays={len(self._arrays)}, weights={n_weights})"
        )
