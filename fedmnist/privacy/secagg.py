"""Secure aggregation with Flower's SecAgg+ (``--secagg``): the server learns the sum of the updates, not one of them.

Bell et al. 2020 (https://eprint.iacr.org/2020/704): each sampled client
quantizes its weighted update, masks it with pairwise masks agreed with a few
neighbours (``--secagg-shares``) and a private mask, and shares its secrets
among those neighbours; the masks cancel in the sum, and the server unmasks
what is left with ``--secagg-threshold`` shares per client, so a client that
drops mid-protocol is tolerated while enough of its neighbours remain.

Flower runs it as a workflow of four message exchanges per round
(``SecAggPlusWorkflow`` inside ``DefaultWorkflow``) on a ServerApp's Grid, with
``secaggplus_mod`` on the ClientApp: the Simulation and the Deployment
Runtime, not the classic pair. The run strategy (validation, records,
checkpoints) is the same; it receives every sampled client's result carrying
the same unmasked average, so per-update checks can only see the aggregate.

Each client weighs its update by its example count before masking, as FedAvg
does. Flower scales that weight by ``max_weight`` and clips the weighted
update to [-8, 8] before quantizing, so a weight above ``max_weight`` silently
clips the larger parameters (Flower's default of 1,000 against MNIST's 20,000
rows a client by default): ``max_weight`` here is the largest example count a
client of the run can have, the bound update validation holds them to.

Under differential privacy (``--dp-noise``, client-side clipping) the
accounting needs a mean with equal weights: ``secagg_mod`` has each client
weigh its clipped update 1, and ``max_weight`` is 1. The server cannot check
a masked update's norm, so the bound then rests on the clients' clipping
(docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Context,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Message,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedmnist.privacy.dp import asks_for_clipping

FIT_EXAMPLES = "fitres.num_examples"  # Where a legacy training reply keeps its example count (flwr.compat).

if TYPE_CHECKING:
    from flwr.server import Server, ServerConfig
    from flwr.server.history import History
    from flwr.serverapp import Grid

    from fedmnist.server.run_strategy import RunStrategy


def secagg_mod(message: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; any other message passes untouched.

    Flower's mod refuses a training message without the protocol's configs, and
    the same ClientApp serves runs with and without ``--secagg``. When the
    server asks for clipping (client-side DP) the update is weighed 1.
    """
    if RECORD_KEY_CONFIGS not in message.content.config_records:
        return call_next(message, context)
    if asks_for_clipping(message):
        return secaggplus_mod(message, context, _weighed_one(call_next))
    return secaggplus_mod(message, context, call_next)


def _weighed_one(call_next: Any) -> Any:
    """``call_next``, its training reply claiming one example: the weight SecAgg+ gives the update."""

    def call(message: Message, context: Context) -> Message:
        reply = call_next(message, context)
        if not reply.has_error():
            reply.content.metric_records[FIT_EXAMPLES]["num_examples"] = 1
        return reply

    return call


def secagg_federation(
    grid: Grid, context: Context, shares: int, threshold: int, timeout: float | None, equal_weights: bool
) -> Any:
    """The federation step of a ServerApp whose rounds train through SecAgg+ (``fedmnist.runtimes.grid.GridFederation``).

    ``equal_weights``: the clients weigh their updates 1 (``secagg_mod`` under DP).
    """
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    def federation(server: Server, server_config: ServerConfig) -> History:
        legacy = LegacyContext(
            context=context,
            config=server_config,
            strategy=SecAggResults(server.strategy),
            client_manager=server.client_manager(),
        )
        # The largest example count a client of this run has (the validation's bound); see the module docstring.
        bound = cast("RunStrategy", server.strategy).validator.max_fit_examples  # run_server's strategy.
        assert equal_weights or bound is not None, "a run's validation knows its largest example count"
        max_weight = 1.0 if equal_weights or bound is None else float(bound)
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=shares, reconstruction_threshold=threshold, max_weight=max_weight, timeout=timeout
            )
        )
        workflow(grid, legacy)
        # The workflow keeps the global model in the context's state, where Server.fit kept it in the server.
        server.parameters = compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        return legacy.history

    return federation


class SecAggResults(Strategy):
    """``strategy``, given SecAgg+'s results the way the run's validation and records expect them.

    * SecAgg+ dequantizes into float64; the model is float32, and the run's
      validation rightly refuses an update whose arrays are of another dtype:
      the unmasked sum is cast back.
    * Flower's workflow (1.41 and 1.42) lists each client that fails to send its masked
      update twice, and also lists, after them, the clients that failed only to
      help unmask, whose updates are in the sum: the round's failures are the
      first (sampled - results) of its list.
    * When too few clients remain to unmask the sum, the workflow gives up on
      the round without a word to the strategy: the round is recorded as one
      whose every update failed, before its evaluation.
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self._dtypes: list[Any] = []
        self._sampled = 0
        self._unaggregated: int | None = None  # The round trained but not (yet) aggregated.

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._dtypes = [array.dtype for array in parameters_to_ndarrays(parameters)]
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        self._sampled, self._unaggregated = len(instructions), server_round
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self._unaggregated = None
        if results:  # Every result carries the same unmasked average: convert it once.
            arrays = parameters_to_ndarrays(results[0][1].parameters)
            if len(arrays) == len(self._dtypes):
                converted = ndarrays_to_parameters([a.astype(d, copy=False) for a, d in zip(arrays, self._dtypes)])
                results = [(proxy, replace(result, parameters=converted)) for proxy, result in results]
        return self.strategy.aggregate_fit(server_round, results, failures[: max(0, self._sampled - len(results))])

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        if self._unaggregated == server_round:
            gave_up = SecAggGaveUp(
                "SecAgg+ gave up on the round: too few clients answered in time to unmask "
                "their sum (fewer than --secagg-threshold of some client's neighbours)"
            )
            self.aggregate_fit(server_round, [], [gave_up] * self._sampled)
        return self.strategy.evaluate(server_round, parameters)


class SecAggGaveUp(Exception):
    """A round's updates that SecAgg+ could not unmask: none reached the model."""
