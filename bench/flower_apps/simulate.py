"""Run a bench Flower App on Flower's simulation runtime (Ray backend), in the Flower venv::

    bench/.venv-flower/bin/python bench/flower_apps/simulate.py --app noop --nodes 100 \\
        --rounds 20 --out result.json
"""

import argparse
import importlib
import os
import sys
from pathlib import Path

from flwr.simulation import run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="noop")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpus-per-client", type=float, default=0.1)
    args = parser.parse_args()
    os.environ.update(
        BENCH_FLWR_NUM_ROUNDS=str(args.rounds),
        BENCH_FLWR_NUM_NODES=str(args.nodes),
        BENCH_FLWR_OUT=args.out,
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent / args.app))
    package = f"bench{args.app}"
    server = importlib.import_module(f"{package}.server_app").app
    client = importlib.import_module(f"{package}.client_app").app
    # Small per-client CPU share so Ray runs many virtual clients at once on 2 cores.
    backend = {"client_resources": {"num_cpus": args.cpus_per_client, "num_gpus": 0.0}}
    run_simulation(server, client, num_supernodes=args.nodes, backend_config=backend)
    if not Path(args.out).exists():
        sys.exit("the ServerApp wrote no result")


if __name__ == "__main__":
    main()
