"""The markdown summary of one ``bench/harness.py`` run: fedsilo beside Flower, and the targets.

Sections:

1. rounds and training (workloads a, b, d): one line per run, with the server's peak RSS and
   the peak RSS per client beside each other for both systems;
2. aggregation (c), fast exchange (e), streaming aggregation memory (f) and secure
   aggregation beside Flower's SecAgg+ workflow (g);
3. fedsilo / Flower ratios where Flower has the same figure;
4. the targets of issue 9 (items 3, 5 and 10), measured against their bounds.

A row whose script does not exist yet carries ``status: "not available"`` and shows as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["rss_per_process", "table"]

#: where a fast-exchange row keeps its median hop, client -> server -> client (issue 9, item 3;
#: bench/relay_latency.py prints ``hop_ms: {median, p90, p99}``); dotted = nested
RELAY_MEDIAN_KEYS = ("hop_ms.median", "median_hop_ms", "median_ms")
#: where a streaming-memory row (bench/streaming_memory.py) keeps its figures
STREAM_PEAK_KEYS = ("server_peak_rss_mb", "peak_rss_mb.server", "peak_rss_mb")
STREAM_BASELINE_KEYS = ("baseline_rss_mb", "server_baseline_rss_mb", "baseline_mb")
STREAM_UPDATE_KEYS = ("update_mb", "one_update_mb")
STREAM_CLIENTS_KEYS = ("clients", "n", "updates")
#: issue 9's round bounds: (label, benchmark, clients, client_mode, median ms/round)
ROUND_TARGETS: list[tuple[str, str, int, str, float]] = [
    ("no-op round, N=2, real processes", "a_round_floor", 2, "processes", 5.0),
    ("no-op round, N=10, real processes", "a_round_floor", 10, "processes", 10.0),
    ("no-op round, N=100, threads", "a_round_floor", 100, "threads", 100.0),
    ("ffnet round, tiny data, N=10, real processes", "d_ffnet_tiny", 10, "processes", 40.0),
]
SERVER_RSS_BOUND_MB = 250.0
RELAY_BOUND_MS = 3.0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _first(row: dict[str, Any], keys: Iterable[str]) -> Any:
    """The first of ``keys`` (dotted for nested) that holds a number."""
    for key in keys:
        value = _get(row, key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _problem(row: dict[str, Any]) -> str:
    """One line for the error column: a traceback's last line says what went wrong."""
    if row.get("status") == "not available":
        return f"not available ({row.get('reason', '')})"
    lines = [line.strip() for line in str(row.get("error") or "").splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text.replace("|", "/")[:100]


def rss_per_process(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """(server peak RSS MiB, peak RSS MiB per client) of one run, whichever runner made it.

    ``fedsilo_runs`` and ``flower_runs`` sum peaks per role (``server``, ``client``,
    ``vclients``); ``round_latency.py`` reports the server and the mean client itself. Clients
    run as threads (fedsilo N=100) or virtual nodes inside one process (Flower simulation)
    have no per-client figure of their own; their share of the client processes is given.
    """
    if "server_peak_rss_mb" in row:
        return row.get("server_peak_rss_mb"), row.get("client_mean_peak_rss_mb")
    memory = row.get("peak_rss_mb") or {}
    if not isinstance(memory, dict):
        return None, None
    clients = row.get("clients") or 0
    client_total = memory.get("client") or memory.get("vclients")
    per_client = client_total / clients if client_total and clients else None
    return memory.get("server"), per_client


def _round_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | N | system | runtime | rounds | median ms/round | wall ms/round "
        "| join s | cold start s | server RSS MB | RSS MB per client "
        "| peak RSS MB (sum / concurrent) | accuracy | log-loss | error |",
        "|" + "---|" * 15,
    ]
    for r in rows:
        given = r.get("peak_rss_mb")
        memory: dict[str, Any] = given if isinstance(given, dict) else {}
        server, per_client = rss_per_process(r)
        lines.append(
            f"| {r['benchmark']} | {r.get('clients')} | {r['system']} | {r.get('runtime')} "
            f"| {r.get('rounds')} | {_fmt(r.get('median_ms_per_round'))} "
            f"| {_fmt(r.get('wall_ms_per_round'))} | {_fmt(r.get('join_s'))} "
            f"| {_fmt(r.get('cold_start_s'))} | {_fmt(server)} | {_fmt(per_client)} "
            f"| {_fmt(memory.get('total'))} / {_fmt(memory.get('concurrent'))} "
            f"| {_fmt(r.get('accuracy'))} | {_fmt(r.get('log_loss'))} | {_problem(r)} |"
        )
    return lines


def _aggregation_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| aggregation (FedAvg, N updates of M float32) | GB/s | s | peak RSS MB "
        "| peak above inputs (x one update) | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} {r['runtime']} (N={r['updates']}, M={r['floats_per_update']:,}) "
            f"| {_fmt(r.get('gb_per_s'))} | {_fmt(r.get('seconds'))} "
            f"| {_fmt(r.get('peak_rss_mb'))} | {_fmt(r.get('peak_over_inputs_in_updates'))} "
            f"| {_problem(r)} |"
        )
    return lines


_SKIP = {"benchmark", "bench", "system", "script", "cores", "load_average", "time", "elapsed_s"}


def _script_table(title: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows of a script whose keys this module does not fix: every scalar figure it gave."""
    lines = [f"| {title} | system | figures | error |", "|---|---|---|---|"]
    for r in rows:
        flat: dict[str, Any] = {}
        for key, value in r.items():
            if key in _SKIP or key in ("error", "status", "reason", "source_benchmark"):
                continue
            if isinstance(value, dict):  # one level: hop_ms.median, ...
                flat |= {f"{key}.{k}": v for k, v in value.items()}
            else:
                flat[key] = value
        figures = ", ".join(
            f"{k}={_fmt(v)}" for k, v in flat.items() if isinstance(v, int | float | str | bool)
        )
        label = r.get("bench") or r.get("source_benchmark") or r["benchmark"]
        lines.append(
            f"| {label} | {r.get('system', 'fedsilo')} | {figures or '-'} | {_problem(r)} |"
        )
    return lines


def _ratios(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| ratio fedsilo / Flower | fedsilo | Flower | ratio |", "|---|---|---|---|"]
    for r in rows:
        if r["system"] != "flower" or "error" in r:
            continue
        match = [
            f
            for f in rows
            if f["system"] == "fedsilo"
            and f["benchmark"] == r["benchmark"]
            and f.get("clients") == r.get("clients")
            and "error" not in f
        ]
        if not match:
            continue
        f = match[0]
        name = f"{r['benchmark']} N={r['clients']} vs Flower {r['runtime']}"
        pairs: list[tuple[str, Any, Any]] = [
            (label, f.get(key), r.get(key))
            for key, label in (
                ("median_ms_per_round", "median ms/round"),
                ("wall_ms_per_round", "wall ms/round"),
                ("cold_start_s", "cold start s"),
            )
        ]
        if r.get("runtime") == "deployment":
            # Flower's simulation runs server and virtual nodes in one process tree: it has
            # no server or per-client figure of its own to set beside fedsilo's.
            (fs, fc), (rs, rc) = rss_per_process(f), rss_per_process(r)
            pairs += [("server peak RSS MB", fs, rs), ("peak RSS MB per client", fc, rc)]
        fm, rm = f.get("peak_rss_mb"), r.get("peak_rss_mb")
        if isinstance(fm, dict) and isinstance(rm, dict):
            pairs.append(("concurrent peak RSS MB", fm.get("concurrent"), rm.get("concurrent")))
        for label, mine, theirs in pairs:
            if mine and theirs:
                lines.append(
                    f"| {name}: {label} | {_fmt(mine)} | {_fmt(theirs)} | {mine / theirs:.3g} |"
                )
    return lines


def _verdict(value: float | None, bound: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value <= bound else "MISSED"


def _targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| issue 9 target | measured | bound | verdict |", "|---|---|---|---|"]
    fedsilo = [r for r in rows if r["system"] == "fedsilo" and "error" not in r]
    for label, benchmark, clients, mode, bound in ROUND_TARGETS:
        match = [
            r
            for r in fedsilo
            if r["benchmark"] == benchmark
            and r.get("clients") == clients
            and r.get("client_mode", "processes") == mode
        ]
        value = match[0].get("median_ms_per_round") if match else None
        lines.append(
            f"| {label}: median ms/round | {_fmt(value)} | {bound:g} | {_verdict(value, bound)} |"
        )
    for r in fedsilo:
        if r["benchmark"] in ("b_training", "d_ffnet_tiny"):
            server, _ = rss_per_process(r)
            lines.append(
                f"| server peak RSS, ffnet session ({r['benchmark']}, N={r.get('clients')}) "
                f"| {_fmt(server)} MB | {SERVER_RSS_BOUND_MB:g} MB "
                f"| {_verdict(server, SERVER_RSS_BOUND_MB)} |"
            )
            if r.get("server_imports_torch") is not None:
                lines.append(
                    f"| the server does not import torch ({r['benchmark']}) "
                    f"| imports torch: {_fmt(r['server_imports_torch'])} | no "
                    f"| {'MISSED' if r['server_imports_torch'] else 'met'} |"
                )
    relay = [r for r in rows if r["benchmark"] == "e_fast_exchange"]
    for r in relay or [{}]:
        value = _first(r, RELAY_MEDIAN_KEYS)
        size = f", {_fmt(r['payload_bytes'])} B" if "payload_bytes" in r else ""
        verdict = _verdict(value, RELAY_BOUND_MS) if value is not None else _problem(r)
        lines.append(
            f"| fast exchange hop client -> server -> client{size}: median ms "
            f"| {_fmt(value)} | {RELAY_BOUND_MS:g} | {verdict or 'not measured'} |"
        )
    for r in (r for r in rows if r["benchmark"] == "f_streaming_memory"):
        limit: float | None
        peak = _first(r, STREAM_PEAK_KEYS)
        baseline, update = _first(r, STREAM_BASELINE_KEYS), _first(r, STREAM_UPDATE_KEYS)
        limit = 3 * update + baseline if update is not None and baseline is not None else None
        verdict = (
            _verdict(peak, limit)
            if limit is not None and peak is not None
            else (_problem(r) or "not measured")
        )
        lines.append(
            f"| streaming FedAvg server peak RSS ({r.get('workflow', 'stream')}), "
            f"N={_fmt(_first(r, STREAM_CLIENTS_KEYS))} "
            f"| {_fmt(peak)} MB | {_fmt(limit)} MB (3 x update + baseline) | {verdict} |"
        )
    return lines


def _secagg_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Workload g (bench/secagg_overhead.py): fedsilo's secure aggregation beside Flower's
    SecAgg+ workflow, each against its own plain FedAvg, per N (CPU ms, medians)."""
    lines = [
        "| N | fedsilo client CPU | fedsilo server CPU (plain) | fedsilo bytes/plain "
        "| fedsilo critical path ms plain -> secure | fedsilo session ms/round plain -> secure "
        "| Flower runtime | Flower round ms plain -> secure | Flower server CPU plain -> secure "
        "| Flower client CPU plain -> secure | Flower bytes/plain | load | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wf = r.get("flower_workflow") or {}
        plain, secure = wf.get("plain") or {}, wf.get("secure") or {}
        fs = r.get("fedsilo_session") or {}

        def arrow(path: str, p: dict[str, Any] = plain, s: dict[str, Any] = secure) -> str:
            return f"{_fmt(_get(p, path))} -> {_fmt(_get(s, path))}"

        problem = _problem(r) or str(plain.get("error") or secure.get("error") or "")[-100:]
        lines.append(
            f"| {_fmt(r.get('clients'))} | {_fmt(_get(r, 'client_ms.total.cpu'))} "
            f"| {_fmt(_get(r, 'server_ms.recover.cpu'))} "
            f"({_fmt(_get(r, 'server_ms.plain_mean.cpu'))}) "
            f"| {_fmt(_get(r, 'bytes_per_client.ratio'))} "
            f"| {_fmt(_get(r, 'critical_path_ms.plain'))} -> "
            f"{_fmt(_get(r, 'critical_path_ms.secure'))} "
            f"| {arrow('wall_ms_per_round', fs.get('plain') or {}, fs.get('secure') or {})} "
            f"| {wf.get('runtime', '-')} "
            f"| {arrow('round_ms')} | {arrow('server_cpu_ms')} | {arrow('client_ms.cpu')} "
            f"| {_fmt(_get(wf, 'secure_vs_plain.bytes_per_client'))} "
            f"| {r.get('load_average')} | {problem.replace('|', '/')} |"
        )
    # issue 14's goal: bytes sent per client at most 2x plain for 1M parameters at N = 10
    for r in rows:
        ratio = _get(r, "bytes_per_client.ratio")
        if r.get("clients") == 10 and r.get("params") == 1_000_000:
            lines.append(
                f"\nissue 14 target, bytes per client <= 2x plain (1M parameters, N=10): "
                f"fedsilo {_fmt(ratio)}x, {_verdict(ratio, 2.0)}"
            )
    return lines


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown summary of ``rows`` (see the module docstring)."""
    rounds = [r for r in rows if r["benchmark"] in ("a_round_floor", "b_training", "d_ffnet_tiny")]
    lines = _round_table(rounds)
    aggregation = [r for r in rows if r["benchmark"] == "c_aggregation"]
    if aggregation:
        lines += ["", *_aggregation_table(aggregation)]
    for benchmark, title in (
        ("e_fast_exchange", "fast exchange (bench/relay_latency.py)"),
        ("f_streaming_memory", "streaming aggregation memory (bench/streaming_memory.py)"),
    ):
        chosen = [r for r in rows if r["benchmark"] == benchmark]
        if chosen:
            lines += ["", *_script_table(title, chosen)]
    secagg = [r for r in rows if r["benchmark"] == "g_secagg"]
    if secagg:
        lines += ["", *_secagg_table(secagg)]
    lines += ["", *_ratios(rows), "", *_targets(rows)]
    return "\n".join(lines)
