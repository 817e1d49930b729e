"""SuperNode key pairs for Flower's SuperNode authentication: ``./run.sh keys``.

A SuperLink started with ``--enable-supernode-auth`` lets in only SuperNodes
whose public key was registered (``flwr supernode register KEY.pub``); each
SuperNode proves it holds the private key (``--auth-supernode-private-key``)
by signing its requests. The keys are elliptic-curve (SECP384R1) pairs in
OpenSSH format, as Flower's supernode-authentication example makes them.

``./run.sh keys --clients 3 [--out keys]`` writes ``keys/supernode_I`` (the
private key, mode 600: it stays on that SuperNode's machine) and
``supernode_I.pub`` (the public key, for the SuperLink's operator to register)
for I = 0..2, keeping any pair that exists. ``./run.sh --runtime deployment``
makes and registers them itself.
"""

from __future__ import annotations

from pathlib import Path

from fedmnist.common.atomic import write_bytes_atomic


def key_paths(folder: Path, partition_id: int) -> tuple[Path, Path]:
    """The private and public key files of the SuperNode for ``partition_id``."""
    private = folder / f"supernode_{partition_id}"
    return private, private.with_name(private.name + ".pub")


def ensure_node_keys(folder: str | Path, count: int) -> list[tuple[Path, Path]]:
    """Key pairs for SuperNodes 0..count-1 in ``folder``: existing pairs are kept, missing ones made."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for partition_id in range(count):
        private, public = key_paths(folder, partition_id)
        if not (private.exists() and public.exists()):
            key = ec.generate_private_key(ec.SECP384R1())
            secret = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
            shared = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            write_bytes_atomic(private, secret, secret=True)
            write_bytes_atomic(public, shared + b"\n")
        pairs.append((private, public))
    return pairs


def main(argv: list[str] | None = None) -> None:
    """Make SuperNode key pairs for Flower's SuperNode authentication."""
    from fedmnist.common.cli import Parser, run_cli
    from fedmnist.settings.arguments import positive_int

    parser = Parser(prog="./run.sh keys", description=main.__doc__)
    parser.add_argument("--clients", type=positive_int, required=True, help="SuperNodes to make key pairs for")
    parser.add_argument(
        "--out", default="keys", help="folder for supernode_I and supernode_I.pub (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    def make() -> None:
        for private, public in ensure_node_keys(args.out, args.clients):
            print(f"{private}  (private: only for that SuperNode)  {public}  (register it on the SuperLink)")

    run_cli(make)
