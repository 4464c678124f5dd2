"""The artifact store behind an fsspec URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.server.state import ArtifactStore


def test_write_read_replace_and_delete(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    assert store.read_bytes("sessions/a/model.bin") is None
    store.write_bytes("sessions/a/model.bin", b"one")
    store.write_bytes("sessions/a/model.bin", b"two")
    assert store.read_bytes("sessions/a/model.bin") == b"two"
    # the write goes through a temporary file that is renamed over the target
    assert [p.name for p in (tmp_path / "artifacts/sessions/a").iterdir()] == ["model.bin"]
    store.delete_prefix("sessions/a")
    assert store.read_bytes("sessions/a/model.bin") is None


def test_file_urls_work_like_paths(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    store.write_bytes("k/v", b"x")
    assert (tmp_path / "store/k/v").read_bytes() == b"x"


@pytest.mark.parametrize("key", ["/etc/passwd", "../escape", "a/../../b"])
def test_keys_cannot_leave_the_store(tmp_path: Path, key: str) -> None:
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(ValueError, match=r"relative without '\.\.'"):
        store.write_bytes(key, b"x")
