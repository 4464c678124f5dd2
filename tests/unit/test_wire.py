"""The frame codec: safetensors bytes with a JSON header, never pickle."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from fedsilo.errors import WireError
from fedsilo.wire import ReplyEnvelope, TaskEnvelope, decode_frame, encode_frame, parse_header


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]
)
def test_arrays_round_trip_exactly(dtype: type) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "matrix": (rng.normal(size=(3, 4)) * 10).astype(dtype),
        "scalar": np.array(7, dtype=dtype),
        "empty": np.zeros((0, 5), dtype=dtype),
    }
    decoded, header = decode_frame(encode_frame(arrays, {"round": 3}))
    assert header == {"round": 3}
    assert set(decoded) == set(arrays)
    for name, original in arrays.items():
        assert decoded[name].dtype == original.dtype
        assert decoded[name].shape == original.shape
        np.testing.assert_array_equal(decoded[name], original)


def test_big_endian_and_non_contiguous_inputs_are_normalised() -> None:
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    decoded, _ = decode_frame(encode_frame({"big": big, "strided": strided}))
    np.testing.assert_array_equal(decoded["big"], big)
    assert decoded["big"].dtype.byteorder in ("<", "=")
    np.testing.assert_array_equal(decoded["strided"], strided)


def test_a_pydantic_header_travels_as_json() -> None:
    envelope = TaskEnvelope(id="t1", session_id="0123456789", kind="fit", round=2, meta={"a": 1})
    _, header = decode_frame(encode_frame({}, envelope))
    assert parse_header(TaskEnvelope, header, "task") == envelope


def test_frames_are_plain_safetensors() -> None:
    data = encode_frame({"w": np.ones(2, dtype=np.float32)}, {"k": "v"})
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    assert header["w"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    assert json.loads(header["__metadata__"]["fedsilo"]) == {"k": "v"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected at least the 8-byte header length"),
        (struct.pack("<Q", 10_000) + b"{}", "claims 10000 bytes but only 2 follow"),
        (struct.pack("<Q", 4) + b"nope", "not valid safetensors"),
    ],
)
def test_malformed_frames_raise_wire_error(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_frame(data)


def test_truncated_buffers_raise_wire_error() -> None:
    data = encode_frame({"w": np.ones(100, dtype=np.float64)})
    with pytest.raises(WireError, match="not valid safetensors"):
        decode_frame(data[:-8])


def test_invalid_header_names_the_field_and_value() -> None:
    with pytest.raises(WireError, match=r"reply is malformed: status: .*\(got \"maybe\"\)"):
        parse_header(ReplyEnvelope, {"status": "maybe"}, "reply")
