"""fedsilo beside Flower, same machine, same invocation, same data (issues 6 and 9).

    make bench                                    # full profile
    .venv/bin/python bench/harness.py --profile quick
    .venv/bin/python bench/harness.py --profile smoke --only d --no-flower   # wiring check

Workloads (one JSON line each in ``bench/results/bench-<stamp>.jsonl``, then a markdown table
from ``bench/report.py``):

a. round overhead floor: no-op rounds (fedsilo ``echo`` / a Flower App that returns at once),
   N = 2 and 10 real client processes; N = 100 as threads in 4 processes (fedsilo) and on
   Flower's simulation runtime; Flower's deployment runtime and simulation runtime both;
b. training round: logistic regression, 15 features, 32,000 rows split IID over 2 clients,
   1 local epoch of SGD (lr 0.2, batch 1024), FedAvg; final test accuracy/log-loss beside
   scikit-learn's centrally trained LogisticRegression on the pooled rows;
c. aggregation: FedAvg of 10 updates of 25M float32 (``bench/aggregation.py``);
d. ffnet on tiny data: N = 10 real client processes on 200-row shards
   (``bench/round_latency.py --workload ffnet-tiny``): median ms/round, the time for the 10
   clients to join, server RSS and RSS per client; beside Flower's numpy logistic regression
   on the same shards (deployment runtime);
e. fast exchange: the relay's round trip client -> server -> client
   (``bench/relay_latency.py``);
f. streaming aggregation memory: the server's peak RSS during FedAvg of a 25M-float32 model
   at N = 2, 10 and 50 (``bench/streaming_memory.py``);
g. secure aggregation overhead (issue 14; not in the default ``--only``, ~25-40 min on 2
   loaded cores): ``bench/secagg_overhead.py`` on a 1M-parameter model at N = 3, 10, 30,
   fedsilo's secure aggregation beside Flower's SecAgg+ workflow and plain FedAvg
   (deployment runtime up to N = 10, simulation at 30); ``--only g``.

Every run row carries the peak RSS of the server and per client (both systems), the cold
start and the machine's cores and load average: on a shared machine compare the
fedsilo/Flower ratio of one invocation, not absolute numbers across invocations. A script of
d-f that does not exist yet gives a ``not available`` row, not a crash.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fedsilo_runs
import flower_runs
from common import facts, install_signal_handlers, leftovers, spawn, stop_all
from report import table

BENCH = Path(__file__).resolve().parent

#: rounds per run; Flower's deployment runtime takes seconds a round, so its runs are shorter
#: in the full profile to keep ``make bench`` under 20 minutes (medians need no more).
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "rounds": 20,
        "floor_rounds": 200,
        "flower_rounds": 10,
        "train_rounds": 20,
        "clients": [2, 10],
        "virtual": 100,
        "agg_size": 25_000_000,
        "agg_updates": 10,
        "tiny_clients": 10,
        "tiny_rounds": 20,
    },
    "quick": {
        "rounds": 20,
        "floor_rounds": 100,
        "flower_rounds": 5,
        "train_rounds": 5,
        "clients": [2, 10],
        "virtual": 100,
        "agg_size": 25_000_000,
        "agg_updates": 10,
        "tiny_clients": 10,
        "tiny_rounds": 10,
    },
    "smoke": {
        "rounds": 5,
        "flower_rounds": 2,
        "train_rounds": 2,
        "clients": [2],
        "virtual": 10,
        "agg_size": 1_000_000,
        "agg_updates": 3,
        "tiny_clients": 2,
        "tiny_rounds": 3,
        "secagg_params": 10_000,
        "secagg_clients": [3],
        "secagg_rounds": 2,
    },
}
#: rows per client shard of workload d (issue 9, item 10)
TINY_ROWS = 200


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, row: dict[str, Any]) -> None:
        row = {**row, **facts()}
        self.rows.append(row)
        with self.path.open("a") as sink:
            sink.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def attempt(self, base: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement; a failure is recorded (with its reason) and the rest go on."""
        began = time.monotonic()
        try:
            self.record({**base, **fn(), "elapsed_s": round(time.monotonic() - began, 1)})
        except Exception as exc:
            traceback.print_exc()
            self.record({**base, "error": f"{type(exc).__name__}: {str(exc)[-600:]}"})
        finally:
            stop_all()

    def attempt_script(
        self, base: dict[str, Any], script: str, args: list[str], timeout: float, work: Path
    ) -> None:
        """Run ``bench/<script>`` and record each JSON line it prints, merged over ``base``.

        A script that does not exist yet is recorded as ``status: "not available"``.
        """
        began = time.monotonic()
        path = BENCH / script
        if not path.exists():
            reason = f"bench/{script} does not exist yet"
            self.record({**base, "status": "not available", "reason": reason})
            return
        try:
            for row in script_rows(path, args, timeout, work):
                source = row.pop("benchmark", None)
                self.record(
                    {
                        **base,
                        **row,
                        "benchmark": base["benchmark"],
                        "source_benchmark": source,
                        "elapsed_s": round(time.monotonic() - began, 1),
                    }
                )
        except Exception as exc:
            traceback.print_exc()
            self.record({**base, "error": f"{type(exc).__name__}: {str(exc)[-600:]}"})
        finally:
            stop_all()


def script_rows(path: Path, args: list[str], timeout: float, work: Path) -> list[dict[str, Any]]:
    """The JSON objects ``path`` prints, one a line, that name a ``benchmark`` (or ``bench``);
    it runs in its own process group (a timeout stops it with everything it started).

    Raises
    ------
    RuntimeError
        When it exits non-zero (with the rows it printed so far and the tail of its output).
    """
    log = work / f"{path.stem}-{time.monotonic_ns()}.log"
    proc = spawn(path.stem, [sys.executable, str(path), *args], log)
    try:
        code = proc.wait(timeout)
    finally:
        stop_all([proc])
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            # A result names its benchmark; other JSON (a leftover-process note) is not one.
            if isinstance(value, dict) and ("benchmark" in value or "bench" in value):
                rows.append(value)
    if code != 0:
        raise RuntimeError(f"{path.name} exited {code} after {len(rows)} rows:\n{proc.log_tail()}")
    if not rows:
        raise RuntimeError(f"{path.name} printed no JSON line:\n{proc.log_tail()}")
    return rows


def write_npz(frames: dict[str, Any], out: Path, n: int) -> None:
    """Flower's clients read the same rows as fedsilo's: partition i = fedsilo client i."""
    out.mkdir(parents=True, exist_ok=True)
    features = [f"x{i}" for i in range(15)]
    for i in range(n):
        frame = frames[f"train_silo{i % 2}"]
        np.savez(out / f"part{i}.npz", x=frame[features].to_numpy(), y=frame["y"].to_numpy())
    test = frames["test"]
    np.savez(out / "test.npz", x=test[features].to_numpy(), y=test["y"].to_numpy())


def write_tiny_npz(frames: dict[str, Any], out: Path, n: int, rows: int) -> None:
    """The shards of ``round_latency.py --workload ffnet-tiny`` for Flower: partition i holds
    the same ``rows`` training rows as fedsilo client i; the test set is its first shard."""
    out.mkdir(parents=True, exist_ok=True)
    features = [f"x{i}" for i in range(15)]
    train, test = frames["train_centralized"], frames["test"]
    for i in range(n):
        part = train.iloc[i * rows : (i + 1) * rows]
        np.savez(out / f"part{i}.npz", x=part[features].to_numpy(), y=part["y"].to_numpy())
    first = test.iloc[:rows]
    np.savez(out / "test.npz", x=first[features].to_numpy(), y=first["y"].to_numpy())


def central_reference(frames: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn's LogisticRegression on the pooled 32,000 rows, scored on the test set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss

    features = [f"x{i}" for i in range(15)]
    train, test = frames["train_centralized"], frames["test"]
    began = time.perf_counter()
    model = LogisticRegression(max_iter=1000).fit(train[features], train["y"])
    seconds = time.perf_counter() - began
    prob = model.predict_proba(test[features])
    return {
        "accuracy": round(float(accuracy_score(test["y"], prob.argmax(axis=1))), 4),
        "log_loss": round(float(log_loss(test["y"], prob)), 4),
        "fit_s": round(seconds, 3),
    }


def aggregation(mode: str, updates: int, size: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "aggregation.py"),
            "--mode",
            mode,
            "--updates",
            str(updates),
            "--size",
            str(size),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_all(profile: dict[str, Any], rec: Recorder, work: Path, only: set[str]) -> None:
    from fedsilo.data.synth import make_frames, write_sample_data

    files = write_sample_data(work / "data")
    frames = make_frames()
    silos = [files["train_silo0"], files["train_silo1"]]
    write_npz(frames, work / "npz", max(profile["clients"] + [2]))
    flwr = None if profile.get("no_flower") else flower_runs.available()
    rounds, frounds = profile["rounds"], profile["flower_rounds"]

    if "a" in only:
        # fedsilo's runs first, on a machine Flower's processes have not just loaded (its
        # simulation runtime leaves the 1-min load at 6 on 2 cores); its rounds take
        # milliseconds, so it runs more of them for a steady median
        floor = profile.get("floor_rounds", rounds)
        v = profile["virtual"]
        for n in profile["clients"]:
            base = {"benchmark": "a_round_floor", "clients": n, "client_mode": "processes"}
            rec.attempt(
                {**base, "system": "fedsilo", "runtime": "real processes", "rounds": floor},
                partial(
                    fedsilo_runs.run,
                    fedsilo_runs.ECHO,
                    n,
                    floor,
                    work / f"fs_echo{n}",
                    silos,
                    None,
                    300,
                ),
            )
        base = {"benchmark": "a_round_floor", "clients": v, "client_mode": "threads"}
        rec.attempt(
            {**base, "system": "fedsilo", "runtime": "threads, 4 processes", "rounds": floor},
            lambda: fedsilo_runs.run(
                fedsilo_runs.ECHO,
                v,
                floor,
                work / f"fs_echo{v}",
                silos,
                None,
                600,
                threads_per_process=-(-v // 4),
            ),
        )
        for n in profile["clients"] if flwr else []:
            base = {"benchmark": "a_round_floor", "clients": n, "client_mode": "processes"}
            rec.attempt(
                {
                    **base,
                    "system": "flower",
                    "flwr": flwr,
                    "runtime": "deployment",
                    "rounds": frounds,
                },
                partial(
                    flower_runs.run_deployment,
                    "noop",
                    n,
                    frounds,
                    work / f"fl_noop{n}",
                    {},
                    60 + 40 * n * frounds,
                ),
            )
            rec.attempt(
                {
                    **base,
                    "system": "flower",
                    "flwr": flwr,
                    "runtime": "simulation",
                    "client_mode": "virtual",
                    "rounds": rounds,
                },
                partial(flower_runs.run_simulation, "noop", n, rounds, work / f"fl_sim{n}", 300),
            )
        if flwr:
            base = {"benchmark": "a_round_floor", "clients": v, "client_mode": "threads"}
            rec.attempt(
                {
                    **base,
                    "system": "flower",
                    "flwr": flwr,
                    "runtime": "simulation",
                    "client_mode": "virtual",
                    "rounds": rounds,
                },
                lambda: flower_runs.run_simulation("noop", v, rounds, work / f"fl_sim{v}", 600),
            )

    if "b" in only:
        t = profile["train_rounds"]
        base = {
            "benchmark": "b_training",
            "clients": 2,
            "rows": 32_000,
            "features": 15,
            "rounds": t,
            "model": "logistic regression, SGD lr 0.2 batch 1024, 1 epoch",
        }
        rec.attempt(
            {**base, "system": "central (scikit-learn)", "runtime": "lbfgs, pooled"},
            lambda: central_reference(frames),
        )
        rec.attempt(
            {
                **base,
                "system": "fedsilo",
                "runtime": "real processes",
                "package": "ffnet, hidden_layer_sizes=[]",
            },
            lambda: fedsilo_runs.run(
                fedsilo_runs.logreg_config(t),
                2,
                t,
                work / "fs_logreg",
                silos,
                files["test"],
                600,
            ),
        )
        if flwr:
            rec.attempt(
                {
                    **base,
                    "system": "flower",
                    "flwr": flwr,
                    "runtime": "deployment",
                    "package": "numpy softmax regression",
                },
                lambda: flower_runs.run_deployment(
                    "logreg",
                    2,
                    t,
                    work / "fl_logreg",
                    {"data-dir": str(work / "npz")},
                    120 + 60 * t,
                ),
            )

    if "c" in only:
        base = {
            "benchmark": "c_aggregation",
            "updates": profile["agg_updates"],
            "floats_per_update": profile["agg_size"],
        }
        for mode, system in (
            ("stream", "fedsilo"),
            ("list", "fedsilo"),
            ("numpy", "numpy"),
        ):
            rec.attempt(
                {**base, "system": system, "runtime": mode},
                partial(aggregation, mode, profile["agg_updates"], profile["agg_size"]),
            )

    if "d" in only:
        n, t = profile["tiny_clients"], profile["tiny_rounds"]
        base = {
            "benchmark": "d_ffnet_tiny",
            "clients": n,
            "client_mode": "processes",
            "rows_per_client": TINY_ROWS,
            "rounds": t,
        }
        rec.attempt_script(
            {**base, "system": "fedsilo", "runtime": "real processes", "package": "ffnet [6,6,6]"},
            "round_latency.py",
            [
                "--workload",
                "ffnet-tiny",
                "--clients",
                str(n),
                "--rounds",
                str(t),
                "--rows",
                str(TINY_ROWS),
            ],
            600,
            work,
        )
        if flwr:
            write_tiny_npz(frames, work / "npz_tiny", n, TINY_ROWS)
            rec.attempt(
                {
                    **base,
                    "system": "flower",
                    "flwr": flwr,
                    "runtime": "deployment",
                    "package": "numpy softmax regression",
                    "rounds": frounds,
                },
                partial(
                    flower_runs.run_deployment,
                    "logreg",
                    n,
                    frounds,
                    work / "fl_logreg_tiny",
                    {"data-dir": str(work / "npz_tiny")},
                    60 + 40 * n * frounds,
                ),
            )

    if "e" in only:
        rec.attempt_script(
            {"benchmark": "e_fast_exchange", "system": "fedsilo"}, "relay_latency.py", [], 300, work
        )

    if "f" in only:
        rec.attempt_script(
            {"benchmark": "f_streaming_memory", "system": "fedsilo"},
            "streaming_memory.py",
            [],
            900,
            work,
        )

    if "g" in only:
        g_args = ["--params", str(profile.get("secagg_params", 1_000_000)), "--clients"]
        g_args += [str(n) for n in profile.get("secagg_clients", [3, 10, 30])]
        g_args += ["--fedsilo-session", "--rounds", str(profile.get("secagg_rounds", 3))]
        if flwr:
            g_args += ["--flower", "--flower-workflow"]
        rec.attempt_script(
            {"benchmark": "g_secagg", "system": "fedsilo + flower" if flwr else "fedsilo"},
            "secagg_overhead.py",
            g_args,
            3600,
            work,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--only", default="abcdef", help="workload letters to run, e.g. 'ad' (g: not by default)"
    )
    parser.add_argument("--no-flower", action="store_true", help="skip every Flower run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    install_signal_handlers()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH / "results" / f"bench-{stamp}.jsonl"
    rec = Recorder(out)
    began = time.monotonic()
    if not args.no_flower and flower_runs.available() is None:
        print(
            "Flower is not installed in bench/.venv-flower (run `make bench`); "
            "Flower rows are skipped.",
            file=sys.stderr,
        )
    try:
        with tempfile.TemporaryDirectory(prefix="fedsilo-bench-") as tmp:
            profile = {**PROFILES[args.profile], "no_flower": args.no_flower}
            run_all(profile, rec, Path(tmp), set(args.only))
    finally:
        stop_all()
    left = leftovers()
    summary = table(rec.rows)
    (out.with_suffix(".md")).write_text(summary + "\n")
    print(
        f"\n## fedsilo vs Flower ({args.profile}, {time.monotonic() - began:.0f} s, "
        f"load average {facts()['load_average']})\n"
    )
    print(summary)
    print(f"\nresults: {out}\nprocesses left behind: {left or 'none'}")
    sys.exit(1 if left else 0)


if __name__ == "__main__":
    main()
