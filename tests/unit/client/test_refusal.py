"""refusal_reason: the one line a refusing client sends, without paths or file contents."""

from __future__ import annotations

from fedsilo.client.refusal import refusal_reason
from fedsilo.errors import ConfigError, DataError
from fedsilo.wire import REFUSAL_REASON_MAX, REFUSAL_REASON_PATTERN, ParticipantRefusal

TABLES = {"train": "/home/owner/silo/train.csv", "test": "s3://bucket/test.parquet"}


def test_paths_become_the_option_and_parser_text_is_dropped() -> None:
    error = DataError(
        [
            "--train-path '/home/owner/silo/train.csv': missing required column(s) 'y'; "
            "available columns: 'a', 'b'",
            "--test-path 's3://bucket/test.parquet' could not be read as parquet: "
            "Invalid value 'alice@example.com'; row 7: 'bob'",
            "--train-path '/home/owner/silo/train.csv': column 'a' has 2 null value(s) of 9; "
            "impute or drop them",
        ],
        source="the local data",
    )

    reason = refusal_reason(error, TABLES)

    assert reason == (
        "its data cannot be used (3 problem(s)): --train-path: missing required column(s) "
        "'y'; available columns: 'a', 'b'; --test-path could not be read as parquet "
        "(details in the client's log); --train-path: column 'a' has 2 null value(s) of 9; "
        "impute or drop them"
    )
    assert (
        "alice" not in reason
        and "bob" not in reason
        and "/home/owner" not in reason
        and "bucket" not in reason
    )
    ParticipantRefusal(client_name="silo-b", reason=reason)  # the server's schema takes it


def test_a_configuration_refusal_is_one_bounded_printable_line() -> None:
    error = ConfigError("Unknown package 'custom-x'.\n\tKnown:\x1b[1m " + "p, " * 600)

    reason = refusal_reason(error, {"train": None})

    assert reason.startswith("the session's configuration cannot run here: Unknown package")
    assert len(reason) == REFUSAL_REASON_MAX and reason.endswith("...")
    assert REFUSAL_REASON_PATTERN.match(reason)
    ParticipantRefusal(client_name="silo-b", reason=reason)
