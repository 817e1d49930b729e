"""Differential privacy: clipping, noise, accounting and the budget (fedmnist.privacy.dp), and runs that use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.common import Code, FitRes, NDArrays, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from conftest import IdleClient, free_port, start_script
from fedmnist.privacy.dp import DpSettings, PrivacyBudgetSpent, PrivacyLedger, clip_update, clipping_mod, private
from fedmnist.results.live_log import read_live_log
from fedmnist.server.validation import update_norm, validate_updates

GLOBAL = [np.zeros((300, 100), np.float32), np.zeros(100, np.float32)]  # 30,100 weights: enough for statistics.


def _result(update: NDArrays, examples: int) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters([g + u for g, u in zip(GLOBAL, update)]), examples, {})


def _update(norm: float, seed: int) -> NDArrays:
    arrays = [np.random.default_rng(seed).normal(size=g.shape).astype(np.float32) for g in GLOBAL]
    return [a * np.float32(norm / update_norm(arrays, GLOBAL)) for a in arrays]


def _aggregate(dp: DpSettings, results: list[FitRes], failures: int = 0) -> NDArrays:
    """One round of ``private(FedAvg)``, as the run strategy drives it: configure, then aggregate."""
    manager = SimpleClientManager()
    proxies = [IdleClient(str(index)) for index in range(len(results) + failures)]
    for proxy in proxies:
        manager.register(proxy)
    strategy = private(FedAvg(min_fit_clients=1, min_available_clients=1, accept_failures=True), dp)
    strategy.configure_fit(1, ndarrays_to_parameters(GLOBAL), manager)
    parameters, _ = strategy.aggregate_fit(1, list(zip(proxies, results)), [RuntimeError("a client failed")] * failures)
    assert parameters is not None, "a failure cancelled the round"
    return parameters_to_ndarrays(parameters)


def test_server_side_clipping_bounds_each_update_and_averages_them_with_equal_weights() -> None:
    dp = DpSettings(noise=0.0, clip=1.0)  # No noise: the clipped mean is exact.
    big, small = _update(10.0, seed=1), _update(0.1, seed=2)
    averaged = _aggregate(dp, [_result(big, examples=1), _result(small, examples=1000)])
    clipped_big = [b / np.float32(10.0) for b in big]  # Norm 10 clipped to 1; the example counts do not weigh.
    expected = [(c + s) / 2 for c, s in zip(clipped_big, small)]
    assert all(np.allclose(a, e, atol=1e-6) for a, e in zip(averaged, expected))


def test_noise_has_the_standard_deviation_of_noise_times_clip_over_the_updates_averaged() -> None:
    np.random.seed(7)  # Flower draws the noise from NumPy's global generator.
    dp = DpSettings(noise=2.0, clip=0.5)
    # Clients that send the model back unchanged: Flower's own clipping divided by their norm, 0, and failed.
    same = [_result([np.zeros_like(g) for g in GLOBAL], examples=10) for _ in range(4)]
    noise = np.concatenate([a.ravel() for a in _aggregate(dp, same)])  # No update at all: what is left is noise.
    assert abs(noise.mean()) < 0.01 and noise.std() == pytest.approx(2.0 * 0.5 / 4, rel=0.02)
    # One client failed: three updates averaged, so more noise (Flower's wrapper would use the four sampled).
    noise = np.concatenate([a.ravel() for a in _aggregate(dp, same[:3], failures=1)])
    assert noise.std() == pytest.approx(2.0 * 0.5 / 3, rel=0.02)


def test_epsilon_grows_with_every_round_and_matches_dp_accounting() -> None:
    dp = DpSettings(noise=1.1, clip=1.0, delta=1e-5)
    ledger = PrivacyLedger(dp, population=100)
    reference = rdp.RdpAccountant()  # Google's dp-accounting, composed by hand for the same mechanism.
    spent = []
    for _ in range(5):
        ledger.spend(10)
        reference.compose(dp_event.GaussianDpEvent(1.1))
        spent.append(ledger.epsilon)
        assert ledger.epsilon == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert spent == sorted(spent) and spent[0] < spent[-1]
    record = ledger.record()
    assert record["releases"] == 5 and record["epsilon"] == spent[-1] and record["noise_multiplier"] == 1.1
    # A resumed run's ledger, told of the earlier rounds, stands where this one does.
    assert PrivacyLedger(dp, population=100, releases=5).epsilon == pytest.approx(spent[-1], rel=1e-12)


def test_the_budget_refuses_exactly_the_round_that_would_spend_past_it() -> None:
    dp = DpSettings(noise=1.0, clip=1.0, max_epsilon=10.0)
    ledger = PrivacyLedger(dp, population=3)
    rounds = 0
    with pytest.raises(PrivacyBudgetSpent, match="over --dp-max-epsilon 10"):
        while True:
            ledger.check(3)
            ledger.spend(3)
            rounds += 1
    assert rounds == 3 and ledger.epsilon <= 10.0 < ledger.epsilon_after_one_more()  # 9.01 spent; a 4th: 10.7.


def test_a_client_clips_its_update_only_when_the_server_asks() -> None:
    start = [np.ones(5, np.float32), np.ones((2, 2), np.float32)]
    trained = [s + 3 for s in start]  # Update norm 3 x sqrt(9) = 9.
    assert clip_update(trained, start, {}) is trained
    clipped = clip_update(trained, start, {"clipping_norm": 0.5})
    assert update_norm(clipped, start) == pytest.approx(0.5, rel=1e-5)
    assert np.allclose(clipped[0] - start[0], clipped[1].ravel()[0] - 1)  # The direction is kept.


def test_the_clientapps_mod_clips_with_flowers_mod_only_when_the_server_asks() -> None:
    from flwr.common import Context, FitIns, Message, Metadata, RecordDict
    from flwr.compat.common.recorddict_compat import fitins_to_recorddict, fitres_to_recorddict, recorddict_to_fitres

    trained = [g + u for g, u in zip(GLOBAL, _update(3.0, seed=5))]

    def train(message: Message, context: Context) -> Message:  # The client: returns the update of norm 3.
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(trained), 10, {})
        return Message(fitres_to_recorddict(fitres, keep_input=True), reply_to=message)

    def norm_after(config: dict) -> float:
        content = fitins_to_recorddict(FitIns(ndarrays_to_parameters(GLOBAL), config), keep_input=True)
        # A message as a ClientApp receives it, metadata and all, which Flower's public overloads leave out.
        message = Message(
            content,
            metadata=Metadata(
                run_id=1,
                message_id="1",
                src_node_id=0,
                dst_node_id=1,  # type: ignore[call-overload]
                reply_to_message_id="",
                group_id="1",
                created_at=0.0,
                ttl=60.0,
                message_type="train",
            ),
        )
        reply = clipping_mod(message, Context(1, 1, {}, RecordDict(), {}), train)
        return update_norm(parameters_to_ndarrays(recorddict_to_fitres(reply.content, True).parameters), GLOBAL)

    assert norm_after({"clipping_norm": 0.5}) == pytest.approx(0.5, rel=1e-5)
    assert norm_after({}) == pytest.approx(3.0, rel=1e-5)


def test_the_server_refuses_an_update_longer_than_the_clipping_norm_it_asked_for() -> None:
    results: list[tuple[ClientProxy, FitRes]] = [
        (IdleClient("good"), _result(_update(0.5, seed=3), 10)),
        (IdleClient("bad"), _result(_update(0.9, seed=4), 10)),
    ]
    accepted, rejected = validate_updates(results, GLOBAL, max_norm_factor=5.0, max_norm=0.5 * 1.01)
    assert [proxy.cid for proxy, _ in accepted] == ["good"]
    assert [str(error) for error in rejected] == [
        "client bad: update norm 0.9 is longer than the clipping norm allows (0.505): not clipped"
    ]


@pytest.mark.slow
def test_classic_clients_clip_a_hostile_one_is_refused_and_the_budget_stops_the_run(
    tmp_path: Path, data_home: str
) -> None:
    """Client-side DP on the classic pair: client.py clips (no mods there), the server enforces it and accounts.

    noise 1, no sampling credit: epsilon 4.73, 7.08, 9.01, then 10.7 > 10, so round 4 never starts.
    """
    port = str(free_port())
    common = ["--dataset", "mnist-5k", "--data-home", data_home]
    server = start_script(
        "server.py",
        "--port",
        port,
        "--rounds",
        "5",
        "--clients",
        "3",
        "--min-clients",
        "3",
        "--model",
        "dense32",
        "--dp-noise",
        "1",
        "--dp-clip",
        "0.05",
        "--dp-side",
        "client",
        "--dp-max-epsilon",
        "10",
        "--baseline",
        "--out",
        str(tmp_path),
        *common,
        log=tmp_path / "server.log",
    )
    clients = [
        start_script(
            "client.py",
            "--server",
            f"127.0.0.1:{port}",
            "--partition-id",
            str(i),
            "--num-partitions",
            "3",
            "--data-home",
            data_home,
            *fault,
            log=tmp_path / f"client_{i}.log",
        )
        for i, fault in enumerate([[], [], ["--fault", "scale"]])  # Scales its update after clipping it.
    ]
    assert server.wait(timeout=180) == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert all(client.wait(timeout=30) == 0 for client in clients)
    console = (tmp_path / "server.log").read_text()
    assert "over --dp-max-epsilon 10" in console and "stopped after round 3 of 5" in console, console[-2000:]
    assert "epsilon 9.01 (delta 1e-05)" in console and "Traceback" not in console
    records = read_live_log(tmp_path / "history" / "history_5.jsonl").records
    assert [r["round"] for r in records] == [1, 2, 3]
    assert [(r["fit_results"], r["rejected_updates"]) for r in records] == [(2, 1)] * 3
    assert all("not clipped" in r["failure_reasons"][0] for r in records)
    ledger = PrivacyLedger(DpSettings(noise=1.0, clip=0.05), population=3)
    for record in records:
        ledger.spend(2)
        assert record["privacy"]["epsilon"] == pytest.approx(ledger.epsilon)
        assert record["privacy"]["clipping"] == "client" and record["privacy"]["clipping_norm"] == 0.05
    summary = json.loads((tmp_path / "history" / "history_5.json").read_text())
    assert summary["stopped_after_round"] == 3 and "privacy budget" in summary["stopped"]
    # The baseline trains one epoch per round the federation ran: 3, not --rounds 5.
    assert [round_number for round_number, _ in summary["baseline"]["accuracy"]] == [0, 1, 2, 3]
    assert summary["privacy"]["epsilon"] == pytest.approx(ledger.epsilon)
    assert (tmp_path / "plots" / "privacy.png").exists() and (tmp_path / "models" / "global_5.keras").exists()


def test_the_dashboard_reads_each_rounds_privacy_and_shows_it_only_for_private_runs() -> None:
    from fedmnist.dashboard.schemas import RoundRecord

    ledger = PrivacyLedger(DpSettings(noise=1.0, clip=0.5, side="client", max_epsilon=20.0), population=3)
    ledger.spend(3)
    shown = RoundRecord.from_record({"round": 1, "privacy": ledger.record()}).privacy
    assert shown is not None and shown.epsilon == pytest.approx(4.7285, rel=1e-4)
    assert (shown.clipping, shown.clipping_norm, shown.max_epsilon, shown.releases) == ("client", 0.5, 20.0, 1)
    assert RoundRecord.from_record({"round": 1}).privacy is None
    page = Path(__file__).parent.parent / "fedmnist" / "dashboard" / "static"
    assert 'id="privacy-card" hidden' in (page / "index.html").read_text()
    assert '$("privacy-card").hidden = !privacy' in (page / "dashboard.js").read_text()
