"""A run's settings, each declared once: its default, its flag and help, and whether a run config holds it.

``ServerSettings`` is everything a run depends on (saved with its results as
``config``). Each field is a ``setting(...)``: its default comes from
``fedmnist.settings.defaults``, and its metadata says how ``server.py`` and ``./run.sh``
take it (``add_setting_arguments``: flag, type, choices, help) and whether
the ServerApp's run config (``pyproject.toml``'s ``[tool.flwr.app.config]``)
holds it. The launcher's ``server.py`` command and ``flwr run``'s run config
are derived from the same fields, and a test checks ``pyproject.toml``
against them: adding a setting is a default in ``defaults.py``, one field here
and the line the test asks for in ``pyproject.toml``.

No Flower or TensorFlow import here: the flags are checked before either loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from fedmnist.attacks.catalogue import ATTACK_CHOICES
from fedmnist.settings import defaults
from fedmnist.settings.arguments import (
    dataset_spec,
    fraction,
    non_negative_float,
    non_negative_int,
    partition_spec,
    port_number,
    positive_float,
    positive_int,
    probability,
    run_name,
    share,
)
from fedmnist.settings.combinations import attack_problem, dp_problem, resolved_strategy, secagg_problem

RUN = "run"  # server.py and ./run.sh take the flag (./run.sh passes it on to server.py).
SERVER = "server"  # Only server.py: ./run.sh decides it itself (the interface, TLS files, waiting).


def setting(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = RUN,
    run_config: bool = True,
    none_as: Any = None,
    to_clients: str | None = None,
) -> Any:
    """A ``ServerSettings`` field: ``default``, and how flags and the run config take it.

    ``help`` ends with the default unless it says it itself (or there is none);
    ``flag`` is RUN, SERVER or None (no flag: the program sets it);
    ``run_config`` False keeps it out of a ServerApp's run config (Flower's
    connection settings decide it there); ``none_as`` is how a None default
    appears in the run config (TOML has no None); ``to_clients`` is the key under
    which every round's config carries it to the clients (``fedmnist.settings.client_config``).
    """
    return field(
        default=default,
        metadata={
            "help": help,
            "type": type,
            "choices": choices,
            "flag": flag,
            "run_config": run_config,
            "none_as": none_as,
            "to_clients": to_clients,
        },
    )


@dataclass(frozen=True)
class ServerSettings:
    """Everything a run depends on; saved with its results as ``config``."""

    rounds: int = setting(defaults.ROUNDS, "federated rounds", type=positive_int)
    clients: int = setting(
        defaults.CLIENTS, "clients that train every round", type=positive_int, to_clients="num-partitions"
    )
    ws_clients: int = setting(
        0,
        "of --clients, how many join over the dashboard's WebSocket /ws instead of as client.py (browser tabs at "
        "/client, examples/ws_client.py); ./run.sh waits for them. They train their own way, so such a run is "
        "not reproducible, which the run records (default: %(default)s)",
        type=non_negative_int,
        run_config=False,
    )
    port: int = setting(defaults.PORT, "server port", type=port_number, run_config=False)
    host: str = setting(
        defaults.SERVER_HOST, "interface to listen on (default: %(default)s, all)", flag=SERVER, run_config=False
    )
    out: str = setting(".", "folder that gets history/, models/ and plots/ (default: the current folder)")
    dataset: str = setting(
        defaults.DATASET,
        "data source: auto = MNIST from OpenML if reachable or cached, else the "
        "offline 5k subset; openml; mnist-5k; fashion-mnist (OpenML, else Debian's "
        "dataset-fashion-mnist); or idx:DIR, a folder of MNIST's four IDX files (docs/configuration.md, Data)",
        type=dataset_spec,
        to_clients="dataset",
    )
    seed: int = setting(
        defaults.SEED, "seed of the client partitions and the initial model", type=int, to_clients="seed"
    )
    data_home: str | None = setting(
        None, "scikit-learn data home for the MNIST cache (default: scikit-learn's)", none_as=""
    )
    partition: str = setting(
        defaults.PARTITION,
        "how training rows are split among clients: iid, dirichlet:ALPHA "
        "(label skew, e.g. 0.1) or shards:K (K label-sorted shards each)",
        type=partition_spec,
        to_clients="partition",
    )
    model: str = setting(
        defaults.MODEL,
        "mlp (784-128-10), dense32 (784-32-10), cnn (small convnet), or the FedAvg "
        "paper's 2nn (784-200-200-10) and cnn-paper (two 5x5 convolutions, fc 512)",
        choices=defaults.MODELS,
        to_clients="model",
    )
    strategy: str = setting(
        defaults.STRATEGY,
        f"aggregation strategy; auto: {defaults.ROBUST_STRATEGY} (robust to in-bound attacks, as accurate as FedAvg "
        f"without them: docs/robustness.md), or {defaults.PLAIN_MEAN_STRATEGY} with --secagg or --dp-noise, which "
        "need a plain mean",
        choices=(defaults.AUTO_STRATEGY, *defaults.STRATEGIES),
    )
    fraction_fit: float = setting(defaults.FRACTION_FIT, "share of the clients trained each round, 0-1", type=fraction)
    fraction_evaluate: float = setting(
        defaults.FRACTION_EVALUATE, "share of the clients that evaluate the global model each round, 0-1", type=fraction
    )
    runtime: str = setting(
        defaults.RUNTIME,
        "classic: a process per client (fastest for a few); simulation: "
        "virtual clients on Ray workers, for 100-1,000 clients on one machine; deployment: a "
        "SuperLink and a SuperNode per client (docs/runtimes.md)",
        choices=defaults.RUNTIMES,
        run_config=False,
    )
    sim_cpus_per_client: float | None = setting(
        None,
        "--runtime simulation: Ray CPUs each virtual client takes while it runs; 1 runs one per core "
        "(default: one Ray worker per core but one, which the server uses)",
        type=positive_float,
        run_config=False,
    )
    ray_address: str | None = setting(
        None,
        "--runtime simulation: join this running Ray cluster (e.g. "
        "10.0.0.5:6379) instead of starting Ray on this machine",
        run_config=False,
    )
    proximal_mu: float = setting(
        defaults.PROXIMAL_MU,
        "FedProx's mu, the weight of the proximal term; --strategy fedprox only",
        type=non_negative_float,
    )
    server_momentum: float = setting(
        defaults.SERVER_MOMENTUM,
        "FedAvgM's server momentum, above 0 and at most 1; --strategy fedavgm only",
        type=fraction,
    )
    server_learning_rate: float = setting(
        defaults.SERVER_LEARNING_RATE, "FedAvgM's server learning rate; --strategy fedavgm only", type=positive_float
    )
    min_clients: int | None = setting(
        None,
        "clients a round needs to go ahead, so the run survives the others failing (default: all but one, "
        "at least 1; the first round waits up to --client-timeout for all, then starts with those present if at "
        "least this many)",
        type=positive_int,
        none_as=0,
    )
    client_timeout: float = setting(
        defaults.CLIENT_WAIT_TIMEOUT, "seconds to wait for the clients to connect", type=positive_float, flag=SERVER
    )
    round_timeout: float = setting(
        defaults.ROUND_TIMEOUT,
        "seconds a round waits for answers; clients later than that count as failed",
        type=positive_float,
    )
    attack: str = setting(
        defaults.ATTACK,
        "make --malicious of the clients (drawn by --seed) run this attack of fedmnist.attacks (docs/robustness.md)",
        choices=ATTACK_CHOICES,
        to_clients="attack",
    )
    malicious: float = setting(
        defaults.MALICIOUS,
        "--attack: the share of the clients that attack, at least 0 and below 1 (0.33 of 20 is 6 clients)",
        type=share,
        to_clients="malicious",
    )
    assumed_attackers: int | None = setting(
        None,
        "robust strategies (krum, multikrum, bulyan, fedtrimmedavg): the attackers per round the aggregation is set "
        "to withstand (default: the most its rule allows for the clients trained per round)",
        type=non_negative_int,
        none_as=-1,
    )
    max_update_norm_factor: float = setting(
        defaults.MAX_UPDATE_NORM_FACTOR,
        "drop client updates farther from the global model than this many times the round's median",
        type=positive_float,
    )
    dp_noise: float | None = setting(
        None,
        "differential privacy: the Gaussian noise multiplier Z; each round's "
        "average of clipped updates gets noise of std Z x clip / clients averaged "
        "(docs/privacy.md; default: no DP)",
        type=positive_float,
        none_as=0.0,
    )
    dp_clip: float | None = setting(
        None,
        "differential privacy: the norm C every client update is clipped to (needed with --dp-noise)",
        type=positive_float,
        none_as=0.0,
    )
    dp_side: str = setting(
        defaults.DP_SIDE,
        "differential privacy: where updates are clipped, on the server or by "
        "the clients (the server then refuses updates longer than C)",
        choices=defaults.DP_SIDES,
    )
    dp_delta: float = setting(
        defaults.DP_DELTA, "differential privacy: the delta the epsilon spent is reported at", type=probability
    )
    dp_max_epsilon: float | None = setting(
        None,
        "differential privacy: stop before a round that would spend more "
        "than this epsilon, and save the rounds done (default: no budget)",
        type=positive_float,
        none_as=0.0,
    )
    secagg: bool = setting(
        False,
        "secure aggregation with Flower's SecAgg+: the server sees only the sum of the "
        "sampled clients' updates, never one alone (--runtime simulation or deployment; docs/privacy.md)",
    )
    secagg_shares: int = setting(
        defaults.SECAGG_SHARES,
        "--secagg: clients each client's secret shares go to (more than 2, at most the clients trained per round)",
        type=positive_int,
    )
    secagg_threshold: int = setting(
        defaults.SECAGG_THRESHOLD,
        "--secagg: shares needed to unmask a client's update "
        "(at least 2, less than --secagg-shares); more of a client's neighbours than "
        "shares - threshold dropping halts the round",
        type=positive_int,
    )
    name: str | None = setting(
        None,
        "a name for the run in the dashboard, plots and comparisons (default: its "
        "settings and start time, e.g. fedavg-iid-3c-40r-20261129-1355)",
        type=run_name,
        none_as="",
    )
    resume: bool = setting(False, "continue an interrupted run from its last checkpoint in --out (same settings)")
    baseline: bool = setting(False, "also train the model centrally on the clients' rows and plot it for reference")
    local_epochs: int = setting(
        defaults.LOCAL_EPOCHS, "local epochs per round, sent to clients", type=positive_int, to_clients="local-epochs"
    )
    batch_size: int = setting(
        defaults.BATCH_SIZE, "local batch size, sent to clients", type=positive_int, to_clients="batch-size"
    )
    learning_rate: float = setting(
        defaults.LEARNING_RATE, "clients' Adam learning rate", type=positive_float, to_clients="learning-rate"
    )
    keep_optimizer: bool = setting(
        False,
        "clients keep Adam's step count and moments from round to round instead "
        "of starting Adam afresh each round as FedAvg's clients do (docs/configuration.md, Local training)",
        to_clients="keep-optimizer",
    )
    tls_dir: str | None = setting(
        None,
        "serve over TLS with ca.pem, server.pem and server.key from this folder (./run.sh certs makes them)",
        flag=SERVER,
        run_config=False,
    )
    # A sweep: ask clients to reconnect for the next run instead of leaving (fedmnist.sweep sets it).
    keep_clients: bool = setting(False, "", flag=None, run_config=False)

    def __post_init__(self) -> None:
        """``strategy`` auto becomes the strategy it stands for, so every record names what ran."""
        object.__setattr__(self, "strategy", resolved_strategy(self))

    def default_name(self, started: datetime) -> str:
        """``fedavg-iid-3c-40r-20261129-1355``: the settings that tell runs apart, and the start (UTC)."""
        return f"{self.strategy}-{self.partition.replace(':', '')}-{self.clients}c-{self.rounds}r-{started:%Y%m%d-%H%M}"

    @property
    def minimum_clients(self) -> int:
        """Clients a round needs to go ahead: ``--min-clients``, else all but one (at least 1)."""
        return self.min_clients or max(1, self.clients - 1)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def settings_from(saved: dict[str, Any]) -> ServerSettings:
    """A run's settings from its saved ``config``; settings it predates take their defaults."""
    known = {f.name for f in fields(ServerSettings)}
    return ServerSettings(**{key: value for key, value in saved.items() if key in known})


def flag_name(name: str) -> str:
    """A setting's flag (and run config key) without the dashes: ``fraction_fit`` -> ``fraction-fit``."""
    return name.replace("_", "-")


def add_setting_arguments(parser: argparse.ArgumentParser, *, program: str, out: tuple[str, str] | None = None) -> None:
    """Add a flag for every setting ``program`` (RUN: ./run.sh, SERVER: server.py) takes.

    ``out`` replaces ``--out``'s default and help (./run.sh writes to the project folder).
    """
    for setting_field in fields(ServerSettings):
        meta = setting_field.metadata
        if meta["flag"] is None or (meta["flag"] == SERVER and program != SERVER):
            continue
        default, help_text = out if (out and setting_field.name == "out") else (setting_field.default, meta["help"])
        _add_flag(parser, setting_field.name, default, help_text, meta)


def add_data_home_argument(parser: argparse.ArgumentParser) -> None:
    """``--data-home`` alone, as ``client.py`` takes it (where this machine keeps the MNIST cache)."""
    data_home = next(f for f in fields(ServerSettings) if f.name == "data_home")
    _add_flag(parser, data_home.name, data_home.default, data_home.metadata["help"], data_home.metadata)


def _add_flag(parser: argparse.ArgumentParser, name: str, default: Any, help_text: str, meta: Any) -> None:
    if isinstance(default, bool):
        parser.add_argument(f"--{flag_name(name)}", action="store_true", help=help_text)
        return
    if default is not None and "default" not in help_text:
        help_text += " (default: %(default)s)"
    options: dict[str, Any] = {"default": default, "help": help_text}
    if meta["type"] is not None:
        options["type"] = meta["type"]
    if meta["choices"] is not None:
        options["choices"] = meta["choices"]
    parser.add_argument(f"--{flag_name(name)}", **options)


def check_setting_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that involve two settings' flags; a mistake exits with one line."""
    if args.min_clients is not None and args.min_clients > args.clients:
        parser.error(f"--min-clients ({args.min_clients}) cannot be more than --clients ({args.clients})")
    if args.runtime != "simulation" and args.ray_address:
        parser.error("--ray-address needs --runtime simulation")
    args.strategy = resolved_strategy(args)
    problem = dp_problem(args) or secagg_problem(args) or attack_problem(args)
    if problem:
        parser.error(problem)


def run_config_fields() -> list[Any]:
    """The settings a ServerApp's run config holds, in declaration order."""
    return [f for f in fields(ServerSettings) if f.metadata["run_config"]]
