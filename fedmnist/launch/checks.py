"""What ``./run.sh`` refuses before it touches any file: a busy port, too little memory, missing inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedmnist.common.errors import UserError
from fedmnist.common.ports import listening
from fedmnist.launch.commands import local_clients
from fedmnist.launch.processes import available_memory_gb
from fedmnist.settings import defaults

PROCESS_MEMORY_GB = 0.8  # Resident size of one server or client process, measured: about 0.75 GB.


def check_before_starting(args: argparse.Namespace, out: Path) -> None:
    """Refuse, with one line, a run that could not start; nothing has been written yet."""
    _check_port_free(args)
    _check_memory(args)
    _check_inputs(args, out)


def _check_port_free(args: argparse.Namespace) -> None:
    if args.runtime == "simulation":  # No Flower server port: the clients are virtual.
        return
    if listening(args.port):
        raise UserError(f"port {args.port} is already in use (another server running? choose --port)")


def _check_inputs(args: argparse.Namespace, out: Path) -> None:
    """``--resume`` needs the run's checkpoint, ``idx:DIR`` its four files."""
    from fedmnist.results.paths import RunPaths

    if args.dataset.startswith(defaults.IDX_PREFIX):
        from fedmnist.data.idx import find_idx_files

        find_idx_files(args.dataset[len(defaults.IDX_PREFIX) :])
    checkpoint = RunPaths(out, args.rounds).checkpoint
    if args.resume and not checkpoint.exists():
        raise UserError(f"nothing to resume: no checkpoint at {checkpoint} (same --out and --rounds as the run?)")


def _check_memory(args: argparse.Namespace) -> None:
    """Refuse to start more TensorFlow processes than this machine's free memory holds."""
    processes = (args.clients if args.runtime == "deployment" else local_clients(args)) + 1
    if args.runtime == "simulation" and not args.ray_address:  # TensorFlow in each Ray worker, and Ray.
        from fedmnist.runtimes.simulation import simulation_workers

        processes += min(args.clients, simulation_workers(args.sim_cpus_per_client)) + 1
    needed = processes * PROCESS_MEMORY_GB
    free = available_memory_gb()
    if needed > free:
        raise UserError(
            f"{args.clients} clients and a server need about {needed:.0f} GB of memory "
            f"({PROCESS_MEMORY_GB} GB each); {free:.0f} GB is free. Use fewer --clients, "
            "or run clients on other machines (docs/runtimes.md)"
        )
