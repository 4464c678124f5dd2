"""What :meth:`fedsilo.sdk.Session.upload_initial_model` sends: a safetensors state dict.

A session's initial model (seed 002's ``model_file``) goes to the server as the bytes of a
safetensors file, never as a pickled module: give the path of one (e.g. written with
``safetensors.torch.save_file(module.state_dict(), path)``), its bytes, or the named arrays
themselves (a ``state_dict()`` of CPU tensors, or numpy arrays), which are encoded here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from fedsilo.wire import encode_frame

__all__ = ["InitialModelSource", "initial_model_bytes"]

#: a ``.safetensors`` path, its bytes, or a mapping of tensor name to array
InitialModelSource: TypeAlias = str | os.PathLike[str] | bytes | Mapping[str, Any]


def initial_model_bytes(source: InitialModelSource) -> bytes:
    """The safetensors bytes of ``source``.

    Raises
    ------
    FileNotFoundError
        When a path names no file.
    TypeError
        When ``source`` is none of a path, bytes, or a mapping of names to arrays (a
        ``torch.nn.Module`` itself: pass its ``state_dict()``).
    """
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    if isinstance(source, Mapping):
        arrays = {str(name): _array(name, value) for name, value in source.items()}
        return encode_frame(arrays)
    raise TypeError(
        "The 'initial_model' must be a .safetensors path, its bytes, or a mapping of tensor "
        f"names to arrays (a module's state_dict()). Got {type(source).__name__}."
    )


def _array(name: object, value: Any) -> np.ndarray:
    # A torch tensor: detached to the CPU first (np.asarray refuses one that needs grad).
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"The initial model's tensor {name!r} has dtype {array.dtype}; expected integers "
            "or floats."
        )
    return array
