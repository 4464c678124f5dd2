"""Tasks, replies and sealed payloads: what a task may carry and how a sealed one travels."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import (
    SEALED_ARRAY,
    Participant,
    Sealed,
    Task,
    incoming_sealed,
    sealed_arrays,
    split_sealed,
)
from fedsilo.wire import DatasetSummary, decode_frame, encode_frame

BOB = Participant(
    id="p1", client_name="bob", dataset=DatasetSummary(train_rows=1, test_rows=0, columns=[])
)
SEALED = Sealed(sender="p0", ciphertext=bytes(range(40)))


def test_a_task_carries_arrays_or_a_sealed_payload_not_both() -> None:
    assert Task(to=BOB, kind="fit", arrays={"w": np.zeros(2)}).sealed is None
    assert Task(to=BOB, kind="psi", sealed=SEALED).arrays is None
    with pytest.raises(TaskError) as info:
        Task(to=BOB, kind="psi", arrays={"w": np.zeros(1)}, sealed=SEALED)
    assert str(info.value) == (
        "Task 'psi' to 'bob' carries both arrays and a sealed payload; a task carries one "
        "or the other."
    )
    # An empty arrays mapping is no payload.
    assert Task(to=BOB, kind="psi", arrays={}, sealed=SEALED).sealed == SEALED


def test_the_sealed_array_name_is_reserved() -> None:
    with pytest.raises(TaskError, match=f"The array name '{SEALED_ARRAY}' is reserved"):
        Task(to=BOB, kind="fit", arrays={SEALED_ARRAY: np.zeros(1, np.uint8)})


def test_a_sealed_payload_survives_the_codec_byte_for_byte() -> None:
    frame = encode_frame({**sealed_arrays(SEALED), "n": np.arange(3)}, {"meta": {}})
    arrays, _ = decode_frame(frame)
    rest, sealed = split_sealed(arrays, sender="p0")
    assert sealed == SEALED
    assert sorted(rest) == ["n"] and SEALED_ARRAY in arrays
    plain = {"n": np.arange(3)}
    assert split_sealed(plain, sender="p0") == (plain, None)  # the same dict, untouched


def test_a_forwarded_payload_names_its_sender() -> None:
    arrays = sealed_arrays(SEALED)
    assert incoming_sealed({"sealed_from": "p0"}, arrays) == SEALED
    assert incoming_sealed({}, {"w": np.zeros(1)}) is None
