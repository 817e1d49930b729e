"""A warm trainer per SuperNode and run, so the Deployment Runtime imports TensorFlow once per node, not per message.

Flower's Deployment Runtime runs every message in a new ``flwr-clientapp``
process. Each fit and evaluate then imported TensorFlow, loaded the data and
built and traced the model again: about 5 s of CPU per message here, against
1.3 s for a message that trains nothing (SecAgg+'s other stages; measured with
process accounting). The first message of a run that needs the model on a
node starts a warm trainer for that node and run: a process that keeps a
``ClientCache`` and runs the ``PartitionClient``'s methods for the later
messages, which hand it their arrays over a Unix socket and take its answers
back. Flower's process per message stays as it is: the mods (SecAgg+, DP
clipping, injected faults) and the node's ``context.state`` live in it, and
the state travels with each call.

The socket lives in a folder only this user may enter, and the trainer
answers only this user's processes (``SO_PEERCRED``), so the pickles it reads
come from this user. A trainer ends when the SuperExec that started its
run's first message ends (the SuperNode stopped), when the node's next run
starts a trainer of its own, or after ``IDLE_EXIT_SECONDS`` without a call.
The launcher also stops the trainers of its SuperNodes (``trainer_pids``).

    python -m fedmnist.client.warm_trainer --socket PATH --watch-pid PID
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flwr.app import RecordDict
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

from fedmnist.client.flower_client import WARM_UP, ClientCache, PartitionClient
from fedmnist.common.cli import alive
from fedmnist.data.sources import DATA_HOME_VARIABLE

START_TIMEOUT_SECONDS = 120.0  # A trainer listens before it imports TensorFlow; this covers a very slow start.
IDLE_EXIT_SECONDS = 600.0  # A trainer nobody called for this long ends (a later message starts another).
WATCH_SECONDS = 0.5  # How often a trainer looks whether its SuperExec is still there.
CLIENT_APP_COMMAND = "flwr-clientapp"  # The program Flower's SuperExec runs for every message.
_LENGTH = struct.Struct("!Q")


def runs_a_process_per_message() -> bool:
    """True in a ``flwr-clientapp`` process: Flower's Deployment Runtime, which ends it after one message."""
    return Path(sys.argv[0]).name == CLIENT_APP_COMMAND


def socket_folder() -> Path:
    """This user's folder for the trainers' sockets, made private if new; refused if anyone else may enter it."""
    folder = Path(tempfile.gettempdir()) / f"fedmnist-trainers-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{folder} is not this user's private folder; remove it and try again")
    return folder


class RemotePartitionClient(NumPyClient):
    """``PartitionClient``'s methods, run by the node's warm trainer for this run.

    ``state`` is the node's ``context.state``: it goes to the trainer with each
    call and what the trainer leaves in it comes back (``--keep-optimizer``'s
    Adam state), so Flower keeps it between messages as before. A get_properties
    that only asks the partition id is answered here, without a trainer.
    """

    def __init__(
        self, run_id: int, node_id: int, partition_id: int, num_partitions: int, state: RecordDict, fault: str | None
    ) -> None:
        self.run_id, self.node_id = run_id, node_id
        self.partition_id, self.num_partitions = partition_id, num_partitions
        self.state, self.fault = state, fault

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        if config.get(WARM_UP):
            return self._call("get_properties", config)
        return {"partition_id": self.partition_id}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return self._call("get_parameters", config)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        return self._call("fit", parameters, config)

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        return self._call("evaluate", parameters, config)

    def _call(self, method: str, *args: Any) -> Any:
        request = (method, self.partition_id, self.num_partitions, self.fault, self.state, args)
        with trainer_connection(self.run_id, self.node_id) as connection:
            send(connection, request)
            outcome, value, state = receive(connection)
        if outcome == "error":
            raise value
        for key, record in state.items():  # Into Flower's own RecordDict, which it saves after the message.
            self.state[key] = record
        return value


@contextlib.contextmanager
def trainer_connection(run_id: int, node_id: int) -> Iterator[socket.socket]:
    """A connection to the warm trainer of ``node_id`` in run ``run_id``, started first if there is none."""
    folder = socket_folder()
    path = folder / f"{run_id}-{node_id}.sock"
    with open(folder / f"{node_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Two messages of one node never start two trainers.
        connection = _connect(path)
        if connection is None:
            _end_other_runs(folder, run_id, node_id)
            connection = _start_trainer(path)
    with connection:
        yield connection


def _connect(path: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:  # No trainer yet, or one that ended and left its socket file.
        connection.close()
        return None
    return connection


def _start_trainer(path: Path) -> socket.socket:
    """Start the trainer for ``path`` beside this message's process, and connect to it once it listens."""
    path.unlink(missing_ok=True)
    project = str(Path(__file__).resolve().parents[2])  # The folder holding fedmnist/: where Flower installed the app.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", __name__, "--socket", str(path), "--watch-pid", str(os.getppid())]
    trainer = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL)  # Its log goes to the node's.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and trainer.poll() is None:
        connection = _connect(path)
        if connection is not None:
            return connection
        time.sleep(0.05)
    trainer.kill()
    raise RuntimeError(f"the warm trainer did not start (exit status {trainer.poll()}); see the node's log")


def _end_other_runs(folder: Path, run_id: int, node_id: int) -> None:
    """A new run on this node: the trainers of its earlier runs end (each holds a TensorFlow runtime)."""
    for path in folder.glob(f"*-{node_id}.sock"):
        if path.name != f"{run_id}-{node_id}.sock":
            connection = _connect(path)
            if connection is not None:
                with connection:
                    send(connection, ("exit",))
            path.unlink(missing_ok=True)


def send(connection: socket.socket, value: object) -> None:
    """One length-prefixed pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    connection.sendall(_LENGTH.pack(len(data)) + data)


def receive(connection: socket.socket) -> Any:
    """One length-prefixed pickle; EOFError if the other end closed first."""
    (length,) = _LENGTH.unpack(_read_exactly(connection, _LENGTH.size))
    return pickle.loads(_read_exactly(connection, length))  # Safe: only this user's processes reach the socket.


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class WarmTrainer:
    """Serves ``RemotePartitionClient`` calls on ``path`` with one ``ClientCache`` until ``watch_pid`` ends."""

    def __init__(self, path: Path, watch_pid: int) -> None:
        self.path, self.watch_pid = path, watch_pid
        self.cache = ClientCache(os.environ.get(DATA_HOME_VARIABLE) or None)

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen()
        listener.settimeout(WATCH_SECONDS)
        import fedmnist.model.keras_model  # noqa: F401  TensorFlow now, while the first caller sends its arrays.

        last_call = time.monotonic()
        try:
            while alive(self.watch_pid) and time.monotonic() - last_call < IDLE_EXIT_SECONDS:
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    try:
                        if not self._answer(connection):
                            return
                    except (EOFError, OSError):  # The caller went away mid-call (its message was stopped).
                        pass
                last_call = time.monotonic()
        finally:
            listener.close()
            self.path.unlink(missing_ok=True)

    def _answer(self, connection: socket.socket) -> bool:
        """Run one call; False when the caller asked this trainer to end."""
        peer_uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if peer_uid != os.getuid():
            return True
        request = receive(connection)
        if request[0] == "exit":
            return False
        method, partition_id, num_partitions, fault, state, args = request
        client = PartitionClient(partition_id, num_partitions, state, self.cache, fault=fault)
        try:
            reply = ("ok", getattr(client, method)(*args), client.state)
        except Exception as error:  # noqa: BLE001  The message's process raises it, as if it had run there.
            reply = ("error", error, None)
        try:
            send(connection, reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # An error that does not pickle: its words do.
            send(connection, ("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}"), None))
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket to serve on")
    parser.add_argument("--watch-pid", type=int, required=True, help="end when this process (the SuperExec) ends")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # The terminal's Ctrl-C: the run is stopping.
        WarmTrainer(args.socket, args.watch_pid).serve()


if __name__ == "__main__":
    main()
