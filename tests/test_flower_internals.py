"""What the code assumes of Flower's and Ray's internals, one named test each.

An upgrade of ``flwr`` or ``ray`` that changes one of these fails the test named after it, instead
of a run somewhere in the middle. Each test says where the code relies on it.
"""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT


def test_flowers_simulation_imports_while_tensorflow_is_blocked() -> None:
    """fedmnist.runtimes.simulation imports run_simulation with sys.modules["tensorflow"] = None (TensorFlow comes later)."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; from flwr.simulation import run_simulation; "
        "assert sys.modules['tensorflow'] is None; print(run_simulation.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "run_simulation"), done.stderr[-2000:]


def test_rays_private_state_lists_actors() -> None:
    """fedmnist.runtimes.simulation._kill_local_workers reads ray._private.state.actors() (ActorClassName, State, Pid)."""
    from ray._private import state

    assert callable(state.actors) and "actor_id" in inspect.signature(state.actors).parameters


def test_rays_driver_keeps_its_local_node_which_can_kill_the_autoscaler_monitor() -> None:
    """fedmnist.runtimes.simulation._stop_autoscaler_monitor calls ray._private.worker._global_node.kill_monitor."""
    from ray._private import node, worker

    assert hasattr(worker, "_global_node")
    assert list(inspect.signature(node.Node.kill_monitor).parameters) == ["self", "check_alive"]


def test_flowers_server_keeps_its_client_manager_and_can_reconnect_clients() -> None:
    """fedmnist.server.federation.ReconnectingServer: Server._client_manager, disconnect_all_clients, reconnect_clients."""
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.server import Server, reconnect_clients
    from flwr.server.strategy import FedAvg

    manager = SimpleClientManager()
    server = Server(client_manager=manager, strategy=FedAvg())
    assert server._client_manager is manager  # The private attribute ReconnectingServer reads.
    assert list(inspect.signature(Server.disconnect_all_clients).parameters) == ["self", "timeout"]
    assert list(inspect.signature(reconnect_clients).parameters) == ["client_instructions", "max_workers", "timeout"]


def test_flowers_supercore_address_helper_sees_a_listening_port() -> None:
    """fedmnist.server.run and fedmnist.sweep wait for a free port with flwr.supercore.address.is_port_in_use."""
    from flwr.supercore.address import is_port_in_use

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert is_port_in_use(address)
    assert not is_port_in_use(address)


def test_flowers_supercore_privacy_modules_have_what_fedmnist_privacy_imports() -> None:
    """fedmnist.privacy.dp clips, adds noise and accounts with flwr.supercore's helpers (not a public API)."""
    import importlib

    wanted = {
        "flwr.supercore.differential_privacy": (
            "KEY_CLIPPING_NORM",
            "add_gaussian_noise_to_params",
            "compute_clip_model_update",
        ),
        "flwr.supercore.privacy_accounting": (
            "GaussianPrivacyEvent",
            "NeighboringRelation",
            "PrivacyConfig",
            "SamplingMethod",
        ),
        "flwr.supercore.privacy_accounting.rdp_accountant": ("RdpAccountant",),
    }
    for module, names in wanted.items():
        imported = importlib.import_module(module)
        assert [name for name in names if not hasattr(imported, name)] == [], module
    assert importlib.import_module("flwr.supercore.differential_privacy").KEY_CLIPPING_NORM == "clipping_norm"


def test_the_legacy_messages_keep_the_fit_config_and_example_count_where_the_mods_look() -> None:
    """fedmnist.privacy.dp's clipping mod reads "fitins.config"; fedmnist.privacy.secagg writes "fitres.num_examples"."""
    import numpy as np
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import fitins_to_recorddict, fitres_to_recorddict

    from fedmnist.privacy.dp import FIT_CONFIG
    from fedmnist.privacy.secagg import FIT_EXAMPLES

    parameters = ndarrays_to_parameters([np.zeros(2, np.float32)])
    sent = fitins_to_recorddict(FitIns(parameters, {"clipping_norm": 0.5}), keep_input=True)
    assert sent.config_records[FIT_CONFIG]["clipping_norm"] == 0.5
    reply = fitres_to_recorddict(FitRes(Status(Code.OK, ""), parameters, 7, {}), keep_input=True)
    assert reply.metric_records[FIT_EXAMPLES]["num_examples"] == 7


def test_the_grpc_bidi_protocol_has_the_messages_the_dashboards_relay_speaks() -> None:
    """fedmnist.dashboard.flower_link joins a classic server as a client through FlowerService.Join."""
    from flwr.proto.transport_pb2 import ClientMessage, Reason, ServerMessage
    from flwr.proto.transport_pb2_grpc import FlowerServiceStub

    instructions = {field.name for field in ServerMessage.DESCRIPTOR.oneofs_by_name["msg"].fields}
    assert {"fit_ins", "evaluate_ins", "reconnect_ins", "get_properties_ins", "get_parameters_ins"} <= instructions
    answers = {field.name for field in ClientMessage.DESCRIPTOR.oneofs_by_name["msg"].fields}
    assert {"fit_res", "evaluate_res", "disconnect_res", "get_properties_res", "get_parameters_res"} <= answers
    assert Reason.ACK is not None and hasattr(FlowerServiceStub, "__init__")


def test_flowers_supernode_loop_sleeps_3_s_through_its_modules_time() -> None:
    """fedmnist.runtimes.prompt_supernode swaps the ``time`` of flwr.supernode.start_client_internal for PromptClock."""
    import time

    from flwr.supernode import start_client_internal

    from fedmnist.runtimes.prompt_supernode import FLOWER_IDLE_WAIT_SECONDS, PromptClock

    assert start_client_internal.time is time
    assert f"time.sleep({FLOWER_IDLE_WAIT_SECONDS})" in inspect.getsource(start_client_internal)
    clock = PromptClock()
    started = time.monotonic()
    clock.sleep(FLOWER_IDLE_WAIT_SECONDS)
    assert time.monotonic() - started < 1 and clock.monotonic is time.monotonic  # The rest is the module's own.


def test_flowers_http_grid_waits_3_s_between_pulls_and_takes_a_timeout() -> None:
    """fedmnist.runtimes.grid.PromptGrid replaces HttpGrid.send_and_receive, whose pulls are 3 s apart."""
    from flwr.superlink.grid.http_grid import HttpGrid

    assert "time.sleep(3)" in inspect.getsource(HttpGrid.send_and_receive)
    assert list(inspect.signature(HttpGrid.send_and_receive).parameters) == ["self", "messages", "timeout"]


def test_flowers_in_memory_grid_sleeps_its_pull_interval_between_looks() -> None:
    """fedmnist.runtimes.grid.poll_promptly sets InMemoryGrid.pull_interval, 0.1 s by default, slept between pulls."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    assert inspect.signature(InMemoryGrid).parameters["pull_interval"].default == 0.1
    assert "time.sleep(self.pull_interval)" in inspect.getsource(InMemoryGrid.send_and_receive)


def test_the_launchers_supernodes_run_prompt_supernode_as_a_script_with_flowers_arguments(tmp_path: Path) -> None:
    """supernode_command starts prompt_supernode.py, which runs from any folder and takes flower-supernode's flags."""
    from fedmnist.runtimes import deployment, prompt_supernode

    command = deployment.supernode_command(9092, 9094, 0, 3, tmp_path, tmp_path / "key")
    assert command[0] == prompt_supernode.__file__ and "--node-config" in command
    done = subprocess.run(
        [sys.executable, command[0], "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--superlink" in done.stdout and "--node-config" in done.stdout, done.stderr


def test_flowers_superexec_runs_every_message_in_a_flwr_clientapp_process_that_knows_its_run_and_node() -> None:
    """fedmnist.client.warm_trainer: a process named flwr-clientapp serves one message; its Context has run and node ids."""
    from flwr.common import Context
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    from fedmnist.client.warm_trainer import CLIENT_APP_COMMAND

    assert TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP] == CLIENT_APP_COMMAND
    assert (Path(sys.executable).parent / CLIENT_APP_COMMAND).exists()
    assert {"run_id", "node_id", "node_config", "state"} <= set(inspect.signature(Context).parameters)


def test_the_launchers_flower_processes_find_the_lighter_flwr_clientapp_which_takes_flowers_arguments(
    tmp_path: Path,
) -> None:
    """fedmnist.runtimes.light_clientapp: Flower's flwr_clientapp, without flwr.supernode.cli's __init__ imports."""
    import shutil

    from fedmnist.runtimes import deployment
    from fedmnist.runtimes.light_clientapp import COMMAND

    deployment.write_flower_home(tmp_path, 9092, {}, tmp_path)
    search_path = deployment.environment(tmp_path, None, None)["PATH"]
    found = shutil.which(COMMAND, path=search_path)
    assert found == str(tmp_path / "bin" / COMMAND)
    ours = subprocess.run([found, "--help"], capture_output=True, text=True)
    flowers = subprocess.run([str(Path(sys.executable).parent / COMMAND), "--help"], capture_output=True, text=True)
    assert ours.returncode == flowers.returncode == 0 and ours.stdout == flowers.stdout, ours.stderr
    imports = subprocess.run([sys.executable, "-X", "importtime", found, "--help"], capture_output=True, text=True)
    assert "flwr.supernode.cli.flwr_clientapp" in imports.stderr
    assert "flower_supernode" not in imports.stderr and "sqlalchemy" not in imports.stderr


def test_flowers_simulation_workers_wait_a_second_on_queues_the_module_makes() -> None:
    """fedmnist.runtimes.simulation sets vce_api.Queue: Flower makes its message queues with that name and its
    worker and injector threads wait 1 s on them before they look at their stop event."""
    from flwr.server.superlink.fleet.vce import vce_api

    assert "Queue()" in inspect.getsource(vce_api.run_api)
    for thread_loop in (vce_api.worker, vce_api.put_message_into_state):
        source = inspect.getsource(thread_loop)
        assert "while not f_stop.is_set():" in source and ".get(timeout=1.0)" in source
