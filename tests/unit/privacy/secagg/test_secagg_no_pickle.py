"""Nothing in the secure aggregation package can unpickle (Flower's SecAgg+ unpickles the
shares other clients send; a crafted share would run code on the receiver)."""

from __future__ import annotations

import re
from pathlib import Path

import fedsilo.privacy.secagg as secagg

PACKAGE = Path(secagg.__file__).parent
FORBIDDEN = re.compile(
    r"\b(pickle|cPickle|dill|cloudpickle|marshal|shelve|joblib|allow_pickle|__reduce__"
    r"|eval|exec)\b|torch\.load|np\.load|numpy\.load"
)


def test_the_package_never_unpickles_or_evaluates() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 8
    hits = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if FORBIDDEN.search(line)
    ]
    assert hits == []


def test_the_grep_would_catch_an_import() -> None:
    assert FORBIDDEN.search("import pickle") and FORBIDDEN.search("np.load(f, allow_pickle=True)")
