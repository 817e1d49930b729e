"""Other "machines" for the suite: network namespaces on a private bridge, each with its own address.

Each machine is a network namespace with its own loopback and one veth cable to a bridge that has no
address on the host: traffic between the machines stays on the bridge, and nothing they run can
reach the host's interfaces or anything beyond. Pulling a machine's cable sets the bridge's end of
its veth down, as unplugging a switch port does: the machine keeps its address and its sockets,
but nothing gets through until the cable is back. Needs root (``ip netns``); ``Network.make``
raises ``Unavailable`` with the reason where that is refused, and the fixture skips on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The machines' addresses, used only inside their namespaces: the host has no address on the bridge,
# and the harness never connects to them from the host (its default route would take them elsewhere).
SUBNET = "10.77.0"


class Unavailable(Exception):
    """Network namespaces cannot be made here (not root, or no ip command)."""


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise ``Unavailable`` with ip's own message when it fails."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as error:
        raise Unavailable("no ip command (iproute2)") from error
    if done.returncode:
        raise Unavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Machine:
    """One namespace: ``address`` on the bridge, ``cable`` the bridge's end of its veth pair."""

    name: str
    address: str
    cable: str

    def command(self, argv: Sequence[str | os.PathLike]) -> list[str]:
        """``argv`` run on this machine: in its network namespace, otherwise as the caller would run it."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def pull_cable(self) -> None:
        """Nothing gets in or out until ``plug_cable``; the machine's own link, address and sockets stay."""
        ip("link", "set", self.cable, "down")

    def plug_cable(self) -> None:
        ip("link", "set", self.cable, "up")


class Network:
    """A bridge and the machines on it; ``make`` creates them, ``remove`` takes everything away again."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # Names unique to this session: another suite may run beside it.
        self.bridge = f"{prefix}br"
        self.machines: list[Machine] = []

    def make(self, names: Sequence[str]) -> dict[str, Machine]:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        for number, name in enumerate(names, start=1):
            machine = Machine(f"{self.prefix}-{name}", f"{SUBNET}.{number}", f"{self.prefix}v{number}")
            ip("netns", "add", machine.name)
            self.machines.append(machine)
            inside = f"{self.prefix}i{number}"
            ip("link", "add", machine.cable, "type", "veth", "peer", "name", inside)
            ip("link", "set", machine.cable, "master", self.bridge)
            ip("link", "set", machine.cable, "up")
            ip("link", "set", inside, "netns", machine.name)
            ip("-n", machine.name, "link", "set", inside, "name", "eth0")
            ip("-n", machine.name, "address", "add", f"{machine.address}/24", "dev", "eth0")
            ip("-n", machine.name, "link", "set", "eth0", "up")
            ip("-n", machine.name, "link", "set", "lo", "up")
        return {name: machine for name, machine in zip(names, self.machines)}

    def remove(self) -> None:
        """Delete every namespace (their processes' sockets go with them) and the bridge, whatever is left."""
        for machine in self.machines:
            for pid in pids_in(machine.name):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "delete", machine.name], capture_output=True)
            subprocess.run(["ip", "link", "delete", machine.cable], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


def pids_in(namespace: str) -> list[int]:
    """The processes still running in ``namespace`` (``ip netns pids``)."""
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


@contextmanager
def machines(names: Sequence[str], prefix: str | None = None) -> Iterator[dict[str, Machine]]:
    """Machines ``names`` on a private bridge for the ``with`` block, removed after it whatever happened."""
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root")
    network = Network(prefix or f"fm{os.getpid() % 100000}")
    try:
        yield network.make(names)
    finally:
        network.remove()


def copy(source: Path, destination: Path) -> Path:
    """A file carried to another machine (here: another folder), as ``scp`` would."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, destination))


class Watched:
    """A process whose merged output a thread collects line by line, so a test can wait for what it says."""

    def __init__(self, command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, *, after: int = 0, timeout: float = 120) -> int:
        """The index of the first line from ``after`` on that holds ``text``; fails once ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if text in self.lines[index]:
                    return index
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not said in time by {' '.join(self.command)}:\n{self.output[-3000:]}")

    def finish(self, timeout: float) -> int:
        """Its exit status once it ends (killed if it has not within ``timeout``), all its output read."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        return self.process.returncode


def documented_commands(page: Path, heading: str) -> list[str]:
    """The commands of the first ``bash`` block under ``heading`` in ``page``: continuations joined, no comments."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    block = text[text.index("```bash\n", start) + len("```bash\n") :]
    block = block[: block.index("```")]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split(" #", 1)[0].strip()  # A comment after a command, too.
        if command and not command.startswith("#"):
            commands.append(command)
    return commands
