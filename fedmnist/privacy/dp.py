"""Differential privacy for the whole run: Flower's fixed-clipping wrappers, Flower's RDP accountant, a budget.

``--dp-noise Z --dp-clip C`` makes each round's global update (ε, δ)-DP at the
client level (central DP, McMahan et al. 2018, https://arxiv.org/abs/1710.06963):
every client's update is clipped to norm C, the clipped updates are averaged
with equal weights, and Gaussian noise of standard deviation Z·C/n is added to
the average of n updates. ``--dp-side server`` clips on the server
(``DifferentialPrivacyServerSideFixedClipping``: the clients need not be
trusted to clip, but the server sees their raw updates); ``--dp-side client``
has the clients clip (``DifferentialPrivacyClientSideFixedClipping``, with
Flower's ``fixedclipping_mod`` on the ClientApp, and ``clip_update`` in a
``client.py`` process, which cannot take mods), and the server's validation
refuses any update longer than C, so a client that does not clip cannot
weaken the noise's bound for everyone.

``PrivacyLedger`` counts the spending with Flower's ``RdpAccountant``
(``flwr[dp]``, Google's dp-accounting) as Flower's own accounted wrappers do:
Rényi DP of the Gaussian mechanism composed once per round whose update was
released, with no credit for client sampling (``no-amplification``), at
``--dp-delta``. ``--dp-max-epsilon`` stops the run before a round that would
spend past it. The clients' evaluation metrics are not accounted (as in Flower).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flwr.client.mod import fixedclipping_mod
from flwr.common import (
    Context,
    FitRes,
    Message,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import (
    KEY_CLIPPING_NORM,
    add_gaussian_noise_to_params,
    compute_clip_model_update,
)
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedmnist.results.records import PrivacySpent

ACCOUNTING = "RDP of the Gaussian mechanism, one release per round, no sampling amplification (Flower's RdpAccountant)"
FIT_CONFIG = "fitins.config"  # Where a legacy training message keeps its fit config (flwr.compat's recorddict_compat).
# The clients clip in float32: w + clip(u) - w is not exactly clip(u). Longer than this counts as not clipped.
CLIP_TOLERANCE = 1.01


@dataclass(frozen=True)
class DpSettings:
    """A run's differential privacy: noise multiplier, clipping norm, where clipping happens, δ and the budget."""

    noise: float
    clip: float
    side: str = "server"
    delta: float = 1e-5
    max_epsilon: float | None = None

    @classmethod
    def of(cls, settings: Any) -> DpSettings | None:
        """The DP settings of a ``ServerSettings`` (None when ``--dp-noise`` is not given)."""
        if settings.dp_noise is None:
            return None
        return cls(settings.dp_noise, settings.dp_clip, settings.dp_side, settings.dp_delta, settings.dp_max_epsilon)


class PrivacyBudgetSpent(Exception):
    """The next round would spend more than ``--dp-max-epsilon``; the run ends after the rounds it has."""


class PrivacyLedger:
    """The privacy a run has spent so far, round by round (Flower's ``RdpAccountant``).

    ``releases`` are the rounds an earlier process of a resumed run already
    released; their spending is composed again at start.
    """

    def __init__(self, dp: DpSettings, population: int, releases: int = 0) -> None:
        self.dp = dp
        self.population = population
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=dp.delta,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
                max_epsilon=dp.max_epsilon,
            )
        )
        if releases:
            self.accountant.compose(self._event(1), releases)

    def _event(self, sample_size: int) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(
            noise_multiplier=self.dp.noise,
            sample_size=min(sample_size, self.population),
            population_size=self.population,
        )

    @property
    def epsilon(self) -> float:
        """ε spent so far at ``--dp-delta`` (0 before the first release)."""
        return self.accountant.get_epsilon(self.dp.delta) if self.accountant.num_releases else 0.0

    def check(self, sample_size: int) -> None:
        """Raise ``PrivacyBudgetSpent`` if releasing one more round would spend past ``--dp-max-epsilon``."""
        if self.dp.max_epsilon is None or not self.accountant.would_exceed(self._event(sample_size)):
            return
        after = self.epsilon_after_one_more()
        raise PrivacyBudgetSpent(
            f"privacy budget: one more round would take epsilon from {self.epsilon:.3g} to {after:.3g}, over "
            f"--dp-max-epsilon {self.dp.max_epsilon:g} (delta {self.dp.delta:g})"
        )

    def epsilon_after_one_more(self) -> float:
        """ε if one more round were released (for the budget message)."""
        projected = RdpAccountant(self.accountant.config)
        projected.compose(self._event(1), self.accountant.num_releases + 1)
        return projected.get_epsilon(self.dp.delta)

    def spend(self, sample_size: int) -> None:
        """One round's update was released: compose its Gaussian mechanism."""
        self.accountant.compose(self._event(sample_size))

    def record(self) -> PrivacySpent:
        """What a round's record says about privacy: ε so far and how it was accounted."""
        return {
            "epsilon": self.epsilon,
            "delta": self.dp.delta,
            "noise_multiplier": self.dp.noise,
            "clipping_norm": self.dp.clip,
            "clipping": self.dp.side,
            "releases": self.accountant.num_releases,
            "max_epsilon": self.dp.max_epsilon,
            "accounting": ACCOUNTING,
        }


def _noised_mean(
    wrapper: DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyClientSideFixedClipping,
    server_round: int,
    results: list[tuple[ClientProxy, FitRes]],
) -> tuple[Parameters | None, dict[str, Scalar]]:
    """The wrapped strategy's mean of the (clipped) ``results`` with equal weights, plus the Gaussian noise.

    Flower's wrappers do this step themselves, but in ways that break the
    bound or the run here: they average with FedAvg's example-count weights (a
    client with a larger share moves the mean by more than C/n); they draw
    noise for the number of clients sampled, too little when some failed or
    were rejected; and they skip the whole round for any one failure, so one
    hostile client could stop the training. Failures are the run's record's
    business (``fedmnist.server.run_strategy``); the noise is Flower's.
    """
    equal = [(proxy, replace(result, num_examples=1)) for proxy, result in results]
    parameters, metrics = wrapper.strategy.aggregate_fit(server_round, equal, [])
    if parameters is not None:
        parameters = add_gaussian_noise_to_params(
            parameters, wrapper.noise_multiplier, wrapper.clipping_norm, len(results)
        )
    return parameters, metrics


class ServerSideClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping: it keeps each round's global weights; the server clips every update.

    Clipping is Flower's ``compute_clip_model_update``, but an update of norm 0
    (a client that sends the model back unchanged) is left alone: Flower's
    divides by its norm, and the round would fail.
    """

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        clipped = [
            (
                proxy,
                replace(
                    result,
                    parameters=ndarrays_to_parameters(
                        clip_update(
                            parameters_to_ndarrays(result.parameters),
                            self.current_round_params,
                            {KEY_CLIPPING_NORM: self.clipping_norm},
                        )
                    ),
                ),
            )
            for proxy, result in results
        ]
        return _noised_mean(self, server_round, clipped)


class ClientSideClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping: it sends ``clipping_norm`` in the fit config; the clients clip."""

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        return _noised_mean(self, server_round, results)


def private(aggregator: Strategy, dp: DpSettings) -> Strategy:
    """``aggregator`` wrapped in Flower's fixed-clipping DP wrapper for ``dp.side``."""
    wrapper = ServerSideClipping if dp.side == "server" else ClientSideClipping
    return wrapper(aggregator, noise_multiplier=dp.noise, clipping_norm=dp.clip, num_sampled_clients=1)


def clip_update(weights: NDArrays, start: NDArrays, config: dict[str, Scalar]) -> NDArrays:
    """``weights``, their update from ``start`` clipped to the config's ``clipping_norm`` (if it has one).

    What Flower's ``fixedclipping_mod`` does on a ClientApp, for the clients
    that cannot take mods (``client.py``: the classic ``start_client`` pair;
    the dashboard's seats for WebSocket participants), and for the server.
    """
    if KEY_CLIPPING_NORM not in config or all(np.array_equal(w, s) for w, s in zip(weights, start)):
        return weights  # Nothing asked, or nothing to clip (Flower's clipping would divide by the norm 0).
    clipped = list(weights)
    compute_clip_model_update(clipped, start, float(config[KEY_CLIPPING_NORM]))
    return clipped


def clipping_mod(message: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``fixedclipping_mod`` when the server asks for client-side clipping; otherwise nothing.

    Flower's mod refuses any training message without ``clipping_norm``, and
    the same ClientApp serves runs with and without DP.
    """
    if asks_for_clipping(message):
        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def asks_for_clipping(message: Message) -> bool:
    """Whether ``message`` is a training message whose fit config has a ``clipping_norm`` (client-side DP)."""
    config = message.content.config_records.get(FIT_CONFIG) if message.metadata.message_type == "train" else None
    return config is not None and KEY_CLIPPING_NORM in config
