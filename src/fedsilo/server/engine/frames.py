"""Frames the engine moves without extra copies of their arrays.

The wire codec (:mod:`fedsilo.wire`) goes through ``safetensors.numpy``, which copies every
array into an intermediate ``bytes`` before it builds the frame (two transient copies to
encode) and copies the buffers out of the frame to decode. For a 100 MB model those copies
are what the server's peak memory is made of, so the engine has its own two halves of the
same format:

* :func:`encode_into` writes each array once, straight into the frame's buffer;
* :func:`decode_views` returns read-only ``np.frombuffer`` views over the received body.

Both produce and accept exactly what :func:`fedsilo.wire.encode_frame` and
:func:`fedsilo.wire.decode_frame` do (the tests check the round trip both ways).

A large frame the engine holds while it is delivered (a broadcast, a checkpoint on its way to
the artifact store) is *spilled* when the caller names a spill directory: its buffer is a
shared mapping of an unlinked file there, and a trimmer thread drops the mapping's pages from
the server's resident set every :data:`TRIM_INTERVAL_S` (``MADV_DONTNEED``). For a shared
file mapping that loses nothing: a later read (a re-delivery, the next client's download)
faults the page back in from the page cache, or from the disk once the kernel wrote it out
and reclaimed it. The frame then costs the server's resident set only the pages read in the
last interval, while the running sum and the reply being folded are the memory that counts;
the page cache holding the frame is the kernel's to reclaim, which anonymous memory (no swap)
is not. The file's blocks are reserved when it is made (``posix_fallocate``), so a full disk
falls back to an ordinary buffer instead of faulting on a write; the file has no name, so it
is gone with its last view, or with the process.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from fedsilo.errors import WireError
from fedsilo.wire import Arrays, decode_frame

__all__ = [
    "SPILL_BYTES",
    "TRIM_INTERVAL_S",
    "decode_views",
    "encode_into",
    "is_spilled",
    "receive_buffer",
]

#: frames at least this large are spilled when the caller gives a spill directory: below it
#: the resident copy costs little and a file per task frame would cost a syscall or three
SPILL_BYTES = 8 << 20
#: how often the trimmer drops spilled frames' pages from the resident set: at the ~1 GB/s a
#: loaded loopback moves, what clients re-read in between is a few tens of MB, not a frame
TRIM_INTERVAL_S = 0.01

_META_KEY = "fedsilo"
# safetensors dtype names of the numpy dtypes a frame may carry (little-endian)
_TO_NAME: dict[np.dtype[Any], str] = {
    np.dtype("<f8"): "F64",
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("<i2"): "I16",
    np.dtype("i1"): "I8",
    np.dtype("<u8"): "U64",
    np.dtype("<u4"): "U32",
    np.dtype("<u2"): "U16",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}
_FROM_NAME: dict[str, np.dtype[Any]] = {name: dtype for dtype, name in _TO_NAME.items()}


def encode_into(
    arrays: Mapping[str, Any] | None, header: Any, spill: Path | None = None
) -> memoryview:
    """A frame of ``arrays`` and ``header``, each array copied once into the result.

    Parameters
    ----------
    arrays : mapping of str to array-like, optional
    header : JSON-able or pydantic model
        Carried under ``__metadata__["fedsilo"]``, as :func:`fedsilo.wire.encode_frame` does.
    spill : Path, optional
        A directory (on a disk, not tmpfs) for the buffer of a frame of :data:`SPILL_BYTES`
        or more, kept out of the resident set (see the module notes). Created if missing;
        when it cannot hold the frame, the frame is an ordinary buffer.

    Returns
    -------
    memoryview
        Read-only view of the frame bytes (a ``bytearray`` or a spilled mapping underneath,
        never copied again).
    """
    header_json = header.model_dump_json() if isinstance(header, BaseModel) else json.dumps(header)
    prepared: list[tuple[str, np.ndarray]] = []
    for name, value in sorted((arrays or {}).items()):
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _TO_NAME:
            raise WireError(f"Array {name!r} has dtype {array.dtype}, which a frame cannot carry.")
        prepared.append((name, array.astype(dtype, copy=False)))
    layout: dict[str, Any] = {"__metadata__": {_META_KEY: header_json}}
    offset = 0
    for name, array in prepared:
        layout[name] = {
            "dtype": _TO_NAME[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(layout, separators=(",", ":")).encode()
    # safetensors pads the header with spaces to a multiple of 8 so the buffers are aligned
    encoded += b" " * (-len(encoded) % 8)
    start = 8 + len(encoded)
    mapped = _spilled(start + offset, spill) if spill is not None else None
    frame: bytearray | mmap.mmap = bytearray(start + offset) if mapped is None else mapped
    frame[:8] = struct.pack("<Q", len(encoded))
    frame[8:start] = encoded
    view = memoryview(frame)
    for name, array in prepared:
        begin = layout[name]["data_offsets"][0]
        if array.nbytes:
            target = np.frombuffer(view, dtype=array.dtype, count=array.size, offset=start + begin)
            # one copy, straight into the frame (any layout: np.copyto walks strides)
            np.copyto(target.reshape(array.shape), array, casting="no")
            del target
    if isinstance(frame, mmap.mmap):
        _TRIMMER.watch(frame)
    return view.toreadonly()


def receive_buffer(size: int, spill: Path | None = None) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes for a frame being received (a reply body).

    With ``spill``, a body of :data:`SPILL_BYTES` or more is a spilled mapping, watched by
    the trimmer as it is written and while its views are folded, so a large reply costs the
    resident set only the pages touched in the last :data:`TRIM_INTERVAL_S`; else (or when
    the directory cannot hold it) a ``bytearray``.
    """
    mapped = _spilled(size, spill) if spill is not None else None
    if mapped is None:
        return bytearray(size)
    _TRIMMER.watch(mapped)
    return mapped


def is_spilled(frame: memoryview) -> bool:
    """Whether ``frame`` lives in a spill file (see :func:`encode_into`)."""
    return isinstance(frame.obj, mmap.mmap)


def _spilled(size: int, directory: Path) -> mmap.mmap | None:
    """A shared mapping of a new unlinked file of ``size`` bytes, blocks reserved; None when
    the frame is small or the directory cannot hold it."""
    if size < SPILL_BYTES:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="frame-", dir=directory)
    except OSError:
        return None
    try:
        os.unlink(path)
        os.posix_fallocate(fd, 0, size)
        return mmap.mmap(fd, size)  # MAP_SHARED; the mapping keeps its own descriptor
    except OSError:
        return None
    finally:
        os.close(fd)


class _Trimmer:
    """Drops the pages of every live spilled frame from the resident set, every
    :data:`TRIM_INTERVAL_S`; its thread runs only while a spilled frame is alive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()
        self._running = False

    def watch(self, frame: mmap.mmap) -> None:
        frame.madvise(mmap.MADV_DONTNEED)  # the encode just touched every page
        with self._lock:
            self._maps.add(frame)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="fedsilo-frame-trimmer", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(TRIM_INTERVAL_S)
            if not self._trim():
                return

    def _trim(self) -> bool:
        """One pass; False (and the thread ends) when no spilled frame is alive. The strong
        references taken here end with the call: a frame must die with its last view."""
        with self._lock:
            maps = list(self._maps)
            if not maps:
                self._running = False
                return False
        for frame in maps:
            with contextlib.suppress(ValueError):  # closed meanwhile
                frame.madvise(mmap.MADV_DONTNEED)
        return True


_TRIMMER = _Trimmer()


def decode_views(body: bytes | bytearray | memoryview) -> tuple[Arrays, Any]:
    """Decode a frame into read-only array views over ``body``; no buffer is copied.

    The arrays keep ``body`` alive: a reply's memory is freed when its arrays are.

    Raises
    ------
    WireError
        When the bytes are not a valid frame (same checks and messages as
        :func:`fedsilo.wire.decode_frame`, which handles any dtype this decoder does not).
    """
    data = memoryview(body).toreadonly()
    if len(data) < 8:
        raise WireError(f"frame is {len(data)} bytes; expected at least the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise WireError(f"frame header claims {header_len} bytes but only {len(data) - 8} follow")
    try:
        layout = json.loads(bytes(data[8 : 8 + header_len]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"frame is not valid safetensors: header is not JSON ({exc})") from exc
    if not isinstance(layout, dict):
        raise WireError("frame is not valid safetensors: header is not a JSON object")
    start = 8 + header_len
    size = len(data) - start
    arrays: Arrays = {}
    spans: list[tuple[int, int]] = []
    for name, info in layout.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _FROM_NAME[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except KeyError:
            # a dtype numpy has no name for (BF16, ...): the codec's own decoder decides
            return decode_frame(bytes(data))
        except (TypeError, ValueError) as exc:
            raise WireError(f"frame is not valid safetensors: tensor {name!r}: {exc}") from exc
        count = int(np.prod(shape, dtype=np.int64))
        if begin < 0 or end > size or end - begin != count * dtype.itemsize:
            raise WireError(
                f"frame is not valid safetensors: tensor {name!r} spans bytes {begin}..{end} "
                f"of {size}; expected {count * dtype.itemsize} bytes for shape {list(shape)}"
            )
        spans.append((begin, end))
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin).reshape(
            shape
        )
    spans.sort()
    covered = 0
    for begin, end in spans:
        if begin != covered:
            raise WireError("frame is not valid safetensors: tensor buffers overlap or leave gaps")
        covered = end
    if covered != size:
        raise WireError(
            f"frame is not valid safetensors: {size - covered} bytes after the last tensor"
        )
    metadata = layout.get("__metadata__") or {}
    try:
        header = json.loads(metadata.get(_META_KEY, "{}"))
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise WireError(f"frame metadata is not JSON: {exc}") from exc
    return arrays, header
