"""The runtimes ``server.py`` runs in its own process: the classic pair, or the in-process simulation.

``federation_for`` is how ``server.py`` picks one from ``--runtime``, ``sweep_federations`` how a sweep
does; the Deployment Runtime runs the ServerApp instead (``fedmnist.runtimes.server_app``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flwr.common import Scalar
from flwr.server import Server, ServerConfig, start_server
from flwr.server.history import History

from fedmnist.common.errors import UserError
from fedmnist.common.tls import load_server_certificates
from fedmnist.server.federation import Federation
from fedmnist.settings.defaults import LOCAL_HOST
from fedmnist.settings.server_settings import ServerSettings

log = logging.getLogger(__name__)


class ClassicFederation(Federation):
    """Flower's classic ``start_server`` (grpc-bidi) on ``--port``, with TLS when ``--tls`` made certificates.

    Flower marks it deprecated; it is kept because it costs about 0.02 s a round here and SecAgg+
    and the app's clients work on it (docs/architecture.md, Why this runtime).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings

    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History:
        settings = self.settings
        log.info(
            "Flower server on %s (%s): %d rounds, waiting for %d clients",
            settings.address,
            "TLS" if settings.tls_dir else "no TLS",
            settings.rounds,
            settings.clients,
        )
        if not is_loopback(settings.host):
            log.warning(
                "listening on %s: any client that reaches this port may join the training (Flower's classic "
                "server authenticates no client). --host %s keeps it to this machine; on a network you do not "
                "trust, use the Deployment Runtime, whose SuperNodes must be registered (docs/runtimes.md)",
                settings.address,
                LOCAL_HOST,
            )
        certificates = load_server_certificates(settings.tls_dir) if settings.tls_dir else None
        return start_server(server_address=settings.address, server=server, certificates=certificates, config=config)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address bound on ``host``."""
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")


def federation_for(settings: ServerSettings) -> Federation:
    """The federation step ``settings.runtime`` names, for a run in this process."""
    if settings.runtime == "simulation":
        from fedmnist.runtimes.simulation import SimulationFederation

        log.info("Flower Simulation Runtime: %d rounds, %d virtual clients", settings.rounds, settings.clients)
        return SimulationFederation(settings)
    if settings.runtime != "classic":
        raise UserError(
            f"the {settings.runtime} runtime runs the ServerApp (fedmnist.runtimes.server_app), not server.py"
        )
    return ClassicFederation(settings)


@contextmanager
def sweep_federations(base: ServerSettings) -> Iterator[Callable[[ServerSettings], Federation]]:
    """Each setting's federation step, for a sweep of ``base``: on the simulation, one simulation for all.

    Ray and its workers then start once for the sweep (each setting's start cost about 6 s of its
    10 s at 3 clients and 2 rounds here); on the classic pair the clients already stay connected.
    """
    if base.runtime != "simulation":
        yield federation_for
        return
    from fedmnist.runtimes.simulation import SimulationFederation, SweepSetting

    log.info("Flower Simulation Runtime: %d virtual clients for every setting", base.clients)
    with SimulationFederation(base) as simulation:
        yield lambda settings: SweepSetting(simulation, settings)
