"""A silo's local data: loading (local paths or fsspec URLs), validation and summaries."""

from fedsilo.data.loading import SUPPORTED_EXTENSIONS, load_table
from fedsilo.data.validation import find_problems, summarize, validate_table

__all__ = ["SUPPORTED_EXTENSIONS", "find_problems", "load_table", "summarize", "validate_table"]
