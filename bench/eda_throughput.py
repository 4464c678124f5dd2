"""Rows per second an EDA client processes: a 1M-row x 20-column parquet file, both rounds.

Writes one parquet file (18 float columns with 5% nulls, one integer code column with 8
values, one text column with 5 values), then, in a fresh process per mode, times what a
``fedsilo client eda`` does with it -- without the network, which ``round_latency.py``
measures:

* ``load``: read the parquet file (``load_table``, as the client runtime does);
* ``validate``: the executor's checks (columns, min rows, infinities);
* ``profile``: round 1 -- distinct counts and quantile sketches of every numeric column;
* ``summarize``: round 2 -- on the plan the server's own ``agree_columns`` makes from the
  profile: counts, moments and histograms, or value counts.

Modes: ``exact`` (epsilon None) and ``dp`` (epsilon 1.0: every release through OpenDP).
One JSON line per mode: phase seconds, ``rows_per_s`` (rows / all four phases),
``compute_rows_per_s`` (rows / profile + summarize), the bytes the client's two replies
weigh (what leaves the silo), and the process's peak RSS.

Usage: ``.venv/bin/python bench/eda_throughput.py [--rows 1000000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = 20
MODES = {"exact": None, "dp": 1.0}


def write_data(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    data: dict[str, Any] = {}
    for j in range(COLUMNS - 2):
        values = rng.normal(10.0 * j, 1.0 + j, rows)
        values[rng.random(rows) < 0.05] = np.nan
        data[f"x{j}"] = values
    data["code"] = rng.integers(0, 8, rows)
    data["region"] = rng.choice(["north", "south", "east", "west", "centre"], rows)
    pd.DataFrame(data).to_parquet(path)


def measure(path: str, epsilon: float | None) -> dict[str, Any]:
    """One mode, in this process: the four phases of a client, timed."""
    from fedsilo.data.dataset import LocalDataset
    from fedsilo.data.loading import load_table
    from fedsilo.federation import Participant, Reply, get_package
    from fedsilo.packages.eda.server import _parse_profile, agree_columns
    from fedsilo.wire import DatasetSummary, ReplyEnvelope, encode_frame

    package = get_package("eda")
    mc, dc = package.parse_configs({"epsilon": epsilon}, {"bench": []})
    times: dict[str, float] = {}

    started = time.perf_counter()
    frame = load_table(path, "--dataset-path")
    times["load_s"] = time.perf_counter() - started

    started = time.perf_counter()
    executor = package.executor(mc, dc, LocalDataset(frame, None, 1, name="bench"))
    times["validate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    meta, arrays = executor.handle("eda_profile", {}, {})
    times["profile_s"] = time.perf_counter() - started
    sent = len(encode_frame(arrays, ReplyEnvelope(meta=meta)))

    summary = DatasetSummary(train_rows=0, test_rows=0, columns=[])
    profile = _parse_profile(Reply(Participant("p", "bench", summary), meta, arrays))
    plan, _ = agree_columns(mc, [profile])

    started = time.perf_counter()
    meta, arrays = executor.handle("eda_summarize", {"columns": plan}, {})
    times["summarize_s"] = time.perf_counter() - started
    sent += len(encode_frame(arrays, ReplyEnvelope(meta=meta)))

    rows = len(frame)
    total = sum(times.values())
    compute = times["profile_s"] + times["summarize_s"]
    kinds = [c["kind"] for c in plan]
    return {
        **{k: round(v, 3) for k, v in times.items()},
        "total_s": round(total, 3),
        "rows": rows,
        "columns": frame.shape[1],
        "continuous_columns": kinds.count("continuous"),
        "categorical_columns": kinds.count("categorical"),
        "rows_per_s": round(rows / total),
        "compute_rows_per_s": round(rows / compute),
        "reply_bytes": sent,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eda_throughput.jsonl"))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one mode in a fresh process, so its peak RSS is its own
        mode, path = args.child
        print(json.dumps(measure(path, MODES[mode])))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from common import facts

    with tempfile.TemporaryDirectory(prefix="fedsilo-eda-bench-") as tmp:
        path = Path(tmp) / "silo.parquet"
        write_data(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        for mode in MODES:
            child = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = {
                "benchmark": "eda_throughput",
                "system": "fedsilo",
                "mode": mode,
                "epsilon": MODES[mode],
                "parquet_mb": round(size_mb, 1),
                **json.loads(child.stdout.strip().splitlines()[-1]),
                **facts(),
            }
            line = json.dumps(result)
            print(line, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
