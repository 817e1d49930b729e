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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataclasses import replace

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

if TYPE_CHECKING:
    from flwr.server import Server, ServerConfig
    from flwr.server.history import History
    from flwr.serverapp import Grid


def secagg_mod(message: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; any other message passes untouched.

    Flower's mod refuses a training message without the protocol's configs, and
    the same ClientApp serves runs with and without ``--secagg``.
    """
    if RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


def secagg_federation(grid: Grid, context: Context, shares: int, threshold: int, timeout: float | None) -> Any:
    """The federation step of a ServerApp whose rounds train through SecAgg+ (``fedmnist.server_run.Federate``)."""
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    def federation(server: Server, server_config: ServerConfig) -> History:
        legacy = LegacyContext(context=context, config=server_config, strategy=InModelDtypes(server.strategy),
                               client_manager=server.client_manager())
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=shares, reconstruction_threshold=threshold, timeout=timeout))
        workflow(grid, legacy)
        # The workflow keeps the global model in the context's state, where Server.fit kept it in the server.
        server.parameters = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD],
                                                             keep_input=True)
        return legacy.history

    return federation


class InModelDtypes(Strategy):
    """``strategy``, but the unmasked sum reaches it in the global model's dtypes.

    SecAgg+ dequantizes into float64; the model is float32, and the run's
    validation rightly refuses an update whose arrays are of another dtype.
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self._dtypes: list[Any] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._dtypes = [array.dtype for array in parameters_to_ndarrays(parameters)]
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:  # Every result carries the same unmasked average: convert it once.
            arrays = parameters_to_ndarrays(results[0][1].parameters)
            if len(arrays) == len(self._dtypes):
                converted = ndarrays_to_parameters([a.astype(d, copy=False) for a, d in zip(arrays, self._dtypes)])
                results = [(proxy, replace(result, parameters=converted)) for proxy, result in results]
        return self.strategy.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.strategy.evaluate(server_round, parameters)
