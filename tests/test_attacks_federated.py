"""Each attack against plain FedAvg and each defence against the attacks its assumption covers.

In one process: the app's own clients (``PartitionClient``, real Keras training on
the 5k set, sharing one ClientCache as a simulation worker's clients do), the
server's update checks and the app's strategies, round after round, without
the network in between (the end-to-end paths run in test_runtimes and
test_end_to_end). Every round every update, the attackers' too, must pass the
checks: the attacks are in-bound.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from conftest import IdleClient
from fedmnist.attacks.catalogue import malicious_partitions
from fedmnist.client.flower_client import ClientCache, PartitionClient
from fedmnist.data.sources import MNIST_5K, MnistData
from fedmnist.server.held_out import HeldOutEvaluator
from fedmnist.server.strategies import build_strategy
from fedmnist.server.validation import UpdateValidator
from fedmnist.settings.client_config import config_for_clients
from fedmnist.settings.robustness import assumed_attackers
from fedmnist.settings.server_settings import ServerSettings

pytestmark = pytest.mark.slow
CLIENTS, ROUNDS = 7, 3
OK = Status(Code.OK, "")


@dataclass(frozen=True)
class Outcome:
    accuracy: float  # Held-out, after the last round.
    backdoor_success: float
    attackers: frozenset[int]
    rounds_an_attacker_was_kept: int  # By a rule that says what it kept (Krum's).


class Federation:
    """Rounds of the app's clients and strategy in this process, with the server's checks in between."""

    def __init__(self, data: MnistData, data_home: str) -> None:
        from fedmnist.model.keras_model import Trainer, build_model

        self.cache = ClientCache(data_home)
        trainer: Future = Future()
        trainer.set_result(Trainer(build_model(42, "mlp"), seed=42))
        self.evaluator = HeldOutEvaluator(trainer, data, backdoor=True)
        self.start = trainer.result().get_weights()
        self.runs: dict[tuple[str, str, float, int], Outcome] = {}

    def outcome(self, strategy: str, attack: str = "none", malicious: float = 0.0, rounds: int = ROUNDS) -> Outcome:
        key = (strategy, attack, malicious, rounds)
        if key not in self.runs:
            self.runs[key] = self._run(
                ServerSettings(clients=CLIENTS, strategy=strategy, attack=attack, malicious=malicious, rounds=rounds)
            )
        return self.runs[key]

    def _run(self, settings: ServerSettings) -> Outcome:
        config_for = config_for_clients(
            settings, MNIST_5K, run_id="/".join(map(str, (settings.strategy, settings.attack, settings.malicious)))
        )
        strategy = build_strategy(settings, self.start, on_fit_config_fn=config_for)
        clients = [PartitionClient(p, CLIENTS, None, self.cache) for p in range(CLIENTS)]
        manager = SimpleClientManager()
        for p in range(CLIENTS):
            manager.register(IdleClient(str(p)))
        validator, parameters = UpdateValidator(), ndarrays_to_parameters(self.start)
        attackers = malicious_partitions(CLIENTS, settings.malicious, settings.seed)
        kept = 0
        for server_round in range(1, settings.rounds + 1):
            strategy.configure_fit(server_round, parameters, manager)
            validator.start_round(parameters)
            config, start = config_for(server_round), parameters_to_ndarrays(parameters)
            results: list[tuple[ClientProxy, FitRes]] = []
            for client in clients:
                weights, examples, metrics = client.fit(start, config)
                results.append(
                    (
                        IdleClient(str(client.partition_id)),
                        FitRes(OK, ndarrays_to_parameters(weights), examples, metrics),
                    )
                )
            accepted, rejected = validator.check_updates(server_round, results)
            assert not rejected, rejected  # In-bound: every attack passes the checks.
            aggregated, _ = strategy.aggregate_fit(server_round, accepted, [])
            assert aggregated is not None
            parameters = aggregated
            decisions = getattr(strategy, "decisions", {})
            kept += any(decisions.get(str(p)) == "kept" for p in attackers)
        _, accuracy = self.evaluator(parameters_to_ndarrays(parameters))
        success = self.evaluator.extra_metrics()["backdoor_success"]
        return Outcome(accuracy, success, attackers, kept)


@pytest.fixture(scope="module")
def federation(mnist_5k: MnistData, data_home: str) -> Federation:
    return Federation(mnist_5k, data_home)


# How far each attack, two of seven clients malicious, moves plain FedAvg after three rounds: held-out
# accuracy points lost (the backdoor: its success rate gained). Measured here: sign-flip and IPM 0.849 ->
# 0.05, label-flip -> 0.813, free-rider -> 0.835, backdoor success 0.011 -> 0.160.
MOVES = {"sign-flip": 0.5, "ipm": 0.5, "label-flip": 0.02, "free-rider": 0.007, "backdoor": 0.1}


@pytest.mark.parametrize("attack", sorted(MOVES))
def test_each_attack_moves_plain_fedavg(federation: Federation, attack: str) -> None:
    clean = federation.outcome("fedavg")
    attacked = federation.outcome("fedavg", attack, 0.29)
    assert len(attacked.attackers) == 2
    if attack == "backdoor":
        assert attacked.backdoor_success - clean.backdoor_success > MOVES[attack], (clean, attacked)
        assert clean.accuracy - attacked.accuracy < 0.01  # Stealthy: the accuracy hides it.
    else:
        assert clean.accuracy - attacked.accuracy > MOVES[attack], (clean, attacked)


def test_a_little_is_enough_takes_over_krums_choice_every_round(federation: Federation) -> None:
    """LIE is made to be chosen by robust rules: Krum keeps an attacker's update in every round.

    With the paper's z (0.43 for 2 of 7) it barely moves FedAvg's mean here (10 rounds: 0.901 clean,
    0.903 attacked) while it takes Krum's choice (0.905 -> 0.893): docs/robustness.md has the table.
    """
    assert federation.outcome("krum", "lie", 0.29).rounds_an_attacker_was_kept == ROUNDS
    assert federation.outcome("krum", "sign-flip", 0.29).rounds_an_attacker_was_kept == 0


# Of seven clients, the attackers each rule is tested against: two, or one where the rule withstands
# only one (Bulyan's n >= 4f + 3; the trimmed mean's default 20% cut) or bounds an update's length but
# not its direction (norm clipping: two sign-flippers of seven cost it 6 points in three rounds here).
ATTACKERS = {"bulyan": 1, "fedtrimmedavg": 1, "normclip": 1}
SHARES = {1: 0.15, 2: 0.29}


@pytest.mark.parametrize(
    "defence", ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "normclip", "centeredclip"]
)
def test_each_defence_holds_the_attackers_its_assumption_covers(federation: Federation, defence: str) -> None:
    """IPM updates (colluding: the strongest here) from the attackers it covers: within 3 points of the same rule
    without them, where plain FedAvg falls (the test below)."""
    attackers = ATTACKERS.get(defence, 2)
    assert attackers <= assumed_attackers(ServerSettings(clients=CLIENTS, strategy=defence))
    clean, attacked = federation.outcome(defence), federation.outcome(defence, "ipm", SHARES[attackers])
    assert len(attacked.attackers) == attackers
    assert clean.accuracy - attacked.accuracy < 0.03, (defence, clean, attacked)
    assert federation.outcome("fedavg").accuracy - clean.accuracy < 0.05  # And it learns without attackers.


def test_without_a_defence_two_ipm_attackers_of_seven_take_fedavg_down(federation: Federation) -> None:
    assert federation.outcome("fedavg").accuracy - federation.outcome("fedavg", "ipm", SHARES[2]).accuracy > 0.5
