"""The engine's frame halves (server/engine/frames.py) against the wire codec, and spilled
frames: same bytes, out of the resident set, intact after their pages were dropped."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pytest

from fedsilo.server.engine import frames
from fedsilo.server.engine.frames import SPILL_BYTES, decode_views, encode_into, is_spilled
from fedsilo.wire import ReplyEnvelope, decode_frame, encode_frame

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {f"a{i}": (rng.normal(size=(3, 5)) * 10).astype(d) for i, d in enumerate(DTYPES)}
    arrays["empty"] = np.zeros((0, 4), dtype=np.float32)
    arrays["strided"] = np.arange(40, dtype=np.float32).reshape(8, 5)[::2, 1:]
    return arrays


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_encode_into_is_read_by_the_wire_decoder_and_decode_views_reads_the_wire_encoder() -> None:
    arrays = sample(np.random.default_rng(0))
    header = ReplyEnvelope(meta={"num_examples": 3})
    ours = encode_into(arrays, header)
    assert ours.readonly
    decoded, got_header = decode_frame(bytes(ours))
    assert_same(decoded, arrays)
    assert got_header == header.model_dump(mode="json")
    views, view_header = decode_views(encode_frame(arrays, header))
    assert_same(views, arrays)
    assert view_header == got_header
    assert all(not v.flags.writeable for v in views.values())


def rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_large_frame_spills_with_the_same_bytes_and_leaves_no_named_file(
    tmp_path: Path,
) -> None:
    arrays = {"x": np.random.default_rng(1).normal(size=SPILL_BYTES // 4).astype(np.float32)}
    plain = encode_into(arrays, {"round": 1})
    spilled = encode_into(arrays, {"round": 1}, tmp_path / "spill")
    assert not is_spilled(plain) and is_spilled(spilled) and spilled.readonly
    assert spilled == plain  # byte for byte
    assert list((tmp_path / "spill").iterdir()) == []  # unlinked: gone with its last view
    views, header = decode_views(spilled)
    np.testing.assert_array_equal(views["x"], arrays["x"])
    assert header == {"round": 1}


def test_a_spilled_frame_leaves_the_resident_set_and_reads_back_intact(tmp_path: Path) -> None:
    values = np.random.default_rng(2).normal(size=4 * SPILL_BYTES // 4).astype(np.float32)
    before = rss_file_kib()
    frame = encode_into({"x": values}, {}, tmp_path)
    view = decode_views(frame)[0]["x"]
    # every page read (made resident again); the trimmer thread may drop them meanwhile
    assert float(view.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))
    frames._TRIMMER._trim()
    resident = rss_file_kib() - before
    assert resident < 0.25 * frame.nbytes / 1024, resident
    np.testing.assert_array_equal(view, values)  # faulted back in from the page cache


def test_small_frames_and_unusable_spill_directories_keep_an_ordinary_buffer(
    tmp_path: Path,
) -> None:
    small = encode_into({"x": np.ones(16, dtype=np.float32)}, {}, tmp_path)
    assert not is_spilled(small)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    big = {"x": np.ones(SPILL_BYTES // 4, dtype=np.float32)}
    frame = encode_into(big, {}, blocked / "spill")
    assert not is_spilled(frame)
    np.testing.assert_array_equal(decode_views(frame)[0]["x"], big["x"])


def test_the_trimmer_lets_a_frame_die_with_its_last_view_and_then_stops(tmp_path: Path) -> None:
    frame = encode_into({"x": np.ones(SPILL_BYTES // 4, dtype=np.float32)}, {}, tmp_path)
    assert frames._TRIMMER._running
    del frame
    gc.collect()
    deadline = time.monotonic() + 5
    while frames._TRIMMER._running and time.monotonic() < deadline:
        time.sleep(frames.TRIM_INTERVAL_S)
    assert not frames._TRIMMER._running
    assert len(frames._TRIMMER._maps) == 0


@pytest.mark.parametrize("size", [0, 1, 7])
def test_tiny_frames_round_trip(size: int) -> None:
    arrays = {"x": np.arange(size, dtype=np.int16)}
    assert_same(decode_views(encode_into(arrays, {}))[0], arrays)
