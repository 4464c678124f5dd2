"""Many fedsilo clients in one process: each a real :class:`ClientRuntime` in a thread.

Used for N = 100 (real processes would need ~100 x 150 MB of interpreters on a 2-core box)::

    FEDSILO_TOKEN=... python bench/fedsilo_vclients.py --url URL --session ID \\
        --train train.parquet --count 25 --first 0

Exits 0 when every client's session completed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient


def _quiet(_event: str) -> None:
    """Per-task events of 100 clients would cost more than the rounds they describe."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    token = os.environ["FEDSILO_TOKEN"]
    results: dict[str, Any] = {}

    def serve(name: str) -> None:
        api = ApiClient(args.url, token)
        runtime = ClientRuntime(api, args.session, name, args.train, None, 1024, on_event=_quiet)
        try:
            results[name] = str(runtime.run())
        except Exception as exc:  # reported below; one failed client fails the process
            results[name] = repr(exc)
        finally:
            api.close()

    names = [f"v{args.first + i}" for i in range(args.count)]
    threads = [threading.Thread(target=serve, args=(n,), daemon=True) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = {k: v for k, v in results.items() if "completed" not in v}
    print(f"{len(results) - len(bad)} completed; failed: {bad}", flush=True)
    sys.exit(1 if bad or len(results) != args.count else 0)


if __name__ == "__main__":
    main()
