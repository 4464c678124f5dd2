"""Read a silo's table from a local path or an fsspec URL (``file://``, ``s3://``, ...).

The format comes from the file extension, so a typo in a path fails with a message naming the
path rather than with a parser error from deep inside pandas or pyarrow.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fedsilo.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SUPPORTED_EXTENSIONS", "load_table", "table_format"]

#: file extension -> reader; the extension is matched case-insensitively
SUPPORTED_EXTENSIONS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _has_protocol(path: str) -> bool:
    return "://" in path


def table_format(path: str, field: str = "path") -> str:
    """The reader (``"csv"`` or ``"parquet"``) for ``path``'s extension.

    Raises
    ------
    DataError
        When the extension is not one of :data:`SUPPORTED_EXTENSIONS`.
    """
    # For URLs the extension is that of the URL's path, not of its query string.
    name = urlsplit(path).path if _has_protocol(path) else path
    extension = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    reader = SUPPORTED_EXTENSIONS.get(extension)
    if reader is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        shown = f"extension {extension!r}" if extension else "no extension"
        raise DataError(
            [f"{field} {path!r} has {shown}; supported extensions are {supported}"],
            source=f"{field} {path!r}",
        )
    return reader


def load_table(path: str, field: str = "path") -> pd.DataFrame:
    """Load one table (parquet or CSV) through fsspec.

    Parameters
    ----------
    path : str
        A local path (``~`` is expanded) or an fsspec URL such as ``file:///data/x.parquet`` or
        ``s3://bucket/x.parquet`` (S3 needs ``s3fs``: ``pip install 'fedsilo[s3]'``).
    field : str
        How the caller names this path, e.g. ``"--train-path"``; every message starts with it
        so the user knows which argument to fix.

    Returns
    -------
    DataFrame of shape (n_rows, n_columns)

    Raises
    ------
    DataError
        When the extension is unsupported, the file does not exist or cannot be parsed.
    """
    # fsspec and pandas are imported here, not at module import, to keep `fedsilo --help` fast.
    import fsspec
    import pandas as pd

    source = f"{field} {path!r}"
    reader = table_format(path, field)
    resolved = path if _has_protocol(path) else os.path.expanduser(path)

    def fail(problem: str) -> DataError:
        return DataError([f"{source} {problem}"], source=source)

    try:
        with fsspec.open(resolved, "rb") as handle:
            frame = pd.read_parquet(handle) if reader == "parquet" else pd.read_csv(handle)
    except FileNotFoundError:
        raise fail("does not exist") from None
    except IsADirectoryError:
        raise fail("is a directory; expected a .csv or .parquet file") from None
    except PermissionError as exc:
        raise fail(f"cannot be read: permission denied ({exc.strerror})") from None
    except ImportError as exc:
        # fsspec raises ImportError naming the missing backend, e.g. s3fs for s3:// URLs.
        raise fail(f"needs an fsspec backend that is not installed: {exc}") from None
    except pd.errors.EmptyDataError:
        raise fail("is empty (no header row)") from None
    except Exception as exc:  # parser errors from pandas/pyarrow/fsspec have no common base
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise fail(f"could not be read as {reader}: {message}") from exc
    return frame
