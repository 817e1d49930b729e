"""Server load: per-round coordination time with 3, 10 and 50 lightweight clients.

    .venv/bin/python bench/load.py [--clients 3 10 50] [--rounds 5]

Starts the real ``server.py`` and N ``bench/light_client.py`` processes (the
app's protocol, NumPy instead of TensorFlow), runs the rounds, and reports the
mean round time minus the server's own held-out evaluation: what the server
and gRPC cost per round.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from processes import free_port, start_quietly, wait_for_port


def run_load(clients: int, rounds: int, out: Path, data_home: str | None = None, processes: int | None = None) -> dict:
    """One server and ``clients`` light clients in ``processes`` processes (default: one each); per-round coordination."""
    port = str(free_port())
    server = start_quietly(
        [
            sys.executable,
            "server.py",
            "--port",
            port,
            "--clients",
            str(clients),
            "--rounds",
            str(rounds),
            "--dataset",
            "mnist-5k",
            "--out",
            str(out),
            "--client-timeout",
            "120",
            *(["--data-home", data_home] if data_home else []),
        ]
    )
    wait_for_port(int(port), server)  # Flower's grpc-bidi client gives up if nobody listens yet.
    processes = processes or clients
    sizes = [clients // processes + (index < clients % processes) for index in range(processes)]
    firsts = [sum(sizes[:index]) for index in range(processes)]  # Client i has seed i, whichever process hosts it.
    light = [
        start_quietly([sys.executable, "bench/light_client.py", f"127.0.0.1:{port}", str(first), str(size)])
        for first, size in zip(firsts, sizes)
    ]
    codes = [server.wait(timeout=600), *(p.wait(timeout=60) for p in light)]
    if any(codes):
        raise RuntimeError(f"load run with {clients} clients failed: exit codes {sorted(set(codes))}")
    records = read_summary(RunPaths(out, rounds).json)["rounds"]
    return {
        "clients": clients,
        "results_per_round": [r["fit_results"] for r in records],
        "round_seconds": sum(r["seconds"] for r in records) / len(records),
        "coordination_seconds": sum(r["coordination_seconds"] for r in records) / len(records),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'clients':>8} {'round (s)':>10} {'coordination (s)':>17}  results per round")
    for clients in args.clients:
        with tempfile.TemporaryDirectory() as out:
            result = run_load(clients, args.rounds, Path(out))
        print(
            f"{clients:>8} {result['round_seconds']:>10.3f} {result['coordination_seconds']:>17.3f}  "
            f"{result['results_per_round']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
