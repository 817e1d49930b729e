"""Round time and accuracy over slow and uneven links: each client behind a user-space slow link.

    .venv/bin/python bench/slow_links.py [--rounds 10]

Starts ``server.py`` (3 clients, the 5k set, ``--rounds``) and three ``client.py``
processes, each connecting through its own ``fedmnist.common.slow_link.SlowLink``
(this kernel has no ``netem``): every client at 0, 50 and 200 ms one-way delay; then
one straggler on a 1 Mbit/s link (the mlp's weights are 407 KB each way), alone,
with ``--round-timeout 2`` and with ``--fraction-fit 0.67 --fraction-evaluate 0.67``.
Prints the median round time (rounds 2 on), the final held-out accuracy and how many
updates the rounds aggregated; writes ``bench/results/slow_links.json``; docs/runtimes.md
quotes the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from benchmark import RESULTS
from fedmnist.common.slow_link import SlowLink, running
from fedmnist.data.sources import MNIST_5K
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from processes import free_port, start_quietly, wait_for_port

CLIENTS = 3
MBIT = 125_000  # Bytes a second in 1 Mbit/s.
# name -> (one-way delay of every client, the straggler's (client 2's) rate in bytes/s, server flags).
SETTINGS: dict[str, tuple[float, float | None, list[str]]] = {
    "0 ms": (0.0, None, []),
    "50 ms": (0.05, None, []),
    "200 ms": (0.2, None, []),
    "straggler at 1 Mbit/s": (0.0, MBIT, []),
    "straggler, --round-timeout 2": (0.0, MBIT, ["--round-timeout", "2"]),
    "straggler, --fraction-fit 0.67": (0.0, MBIT, ["--fraction-fit", "0.67", "--fraction-evaluate", "0.67"]),
}


def run(name: str, rounds: int, out: Path) -> dict:
    """One run of setting ``name``: server and clients as processes, the links in this one."""
    delay, straggler_rate, flags = SETTINGS[name]
    port = free_port()
    server_args = [sys.executable, "server.py", "--rounds", str(rounds), "--clients", str(CLIENTS)]
    server_args += ["--port", str(port), "--dataset", MNIST_5K, "--out", str(out), "--host", "127.0.0.1", *flags]
    with ExitStack() as stack:
        server = start_quietly(server_args)
        stack.callback(server.kill)
        wait_for_port(port, server)
        clients = []
        for partition in range(CLIENTS):
            rate = straggler_rate if partition == CLIENTS - 1 else None
            link = stack.enter_context(running(SlowLink(("127.0.0.1", port), delay=delay, rate=rate)))
            client_args = [sys.executable, "client.py", "--server", f"127.0.0.1:{link}"]
            clients.append(start_quietly([*client_args, "--partition-id", str(partition), "--num-partitions", "3"]))
            stack.callback(clients[-1].kill)
        server.wait(timeout=60 * rounds)
        for client in clients:
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
    summary = read_summary(RunPaths(out, rounds).json)
    records = summary["rounds"]
    return {
        "round_seconds_median": statistics.median(r["seconds"] for r in records[1:]),
        "accuracy": records[-1]["centralized"]["accuracy"],
        "updates_aggregated": sum(r["fit_results"] for r in records),
        "rounds": len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for index, name in enumerate(SETTINGS):
            results[name] = run(name, args.rounds, Path(folder) / str(index))
            print(f"{name:32} {results[name]}", flush=True)
    print("\n| link | round (median) | held-out accuracy | updates aggregated |\n| --- | --- | --- | --- |")
    for name, found in results.items():
        print(
            f"| {name} | {found['round_seconds_median']:.2f} s | {found['accuracy']:.3f} | "
            f"{found['updates_aggregated']} of {CLIENTS * found['rounds']} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "slow_links.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
