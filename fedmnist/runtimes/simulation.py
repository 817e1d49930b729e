"""The Simulation Runtime: a run's clients as virtual Flower clients on Ray, on this machine.

``./run.sh --runtime simulation --clients 100 --fraction-fit 0.1`` runs the same
server (validation, records, checkpoints, results) as the classic runtime, but
Flower's Simulation Runtime starts no client processes: a few Ray workers
(``--sim-cpus-per-client`` sets how many fit on the machine) each play many
virtual clients in turn, one message at a time.

The clients are the ClientApp (``fedmnist.client.client_app``: its per-worker cache
is what makes 100-1,000 clients cheap here). The server runs in this process,
so ``server.py``'s Ctrl-C handling, checkpoints and dashboard work unchanged;
``flwr run .`` runs the same pair through the ServerApp instead (docs/runtimes.md).

As on every runtime, the run's settings reach the clients in the fit config
(the server is their only source). With ``--keep-optimizer`` a virtual client
keeps its Adam state between rounds in Flower's ``context.state``.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from fedmnist.common.cli import wait_for
from fedmnist.data.sources import DATA_HOME_VARIABLE
from fedmnist.runtimes.grid import GridFederation
from fedmnist.server.federation import Federation

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.common import Scalar
    from flwr.server import Server, ServerConfig
    from flwr.server.history import History
    from flwr.serverapp import Grid

    from fedmnist.settings.server_settings import ServerSettings

RAY_STEPS_PER_CPU = 10_000  # Ray counts resources in 1/10,000ths; a share of a CPU is rounded down to them.
# After a stop, how long the round in flight may take to end before Ray is shut down under it. The
# launcher gives a stopping server 30 s (saving included) before it kills it, and a killed server
# leaves Ray's agents running.
STOP_JOIN_SECONDS = 10.0
# How long Flower's simulation threads wait on their message queues before they look at their stop
# event again (PromptQueue): Flower waits 1 s, which every simulation spent at its end.
QUEUE_WAIT_SECONDS = 0.05


class PromptQueue(queue.Queue):
    """The queue Flower's Simulation Runtime passes messages through, waiting at most 0.05 s at a time.

    Flower's worker threads take each message from such a queue, waiting up to 1 s,
    and look at their stop event only between waits; when the rounds are over the
    simulation ended about 1 s after the ServerApp (1.07 s after the server's last
    line here). A shorter wait lets them see the stop at once; an idle wait costs a
    wake-up every 0.05 s. Set in one place (``_flower_simulation``), pinned by
    ``tests/test_flower_internals.py``.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else min(timeout, QUEUE_WAIT_SECONDS))


def _take_sigterm_back_from_ray() -> None:
    """Give SIGTERM back to this process's Python handler, which ``ray.init`` replaced.

    Ray's failure-signal handler (absl's) reports a SIGTERM and has the process
    killed 3 s later, whatever Python does meanwhile: a server stopped by
    ``./run.sh`` (which sends SIGTERM) died while saving its completed rounds.
    Handlers can only be set on the main thread; Ray starts in another.
    """
    handler = signal.getsignal(signal.SIGTERM)  # What Python last installed; None if not set from Python.
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@dataclass
class _Job:
    """One run's rounds, for the simulation's ServerApp to drive: ``rounds`` gets its History or its error."""

    server: Server
    config: ServerConfig
    client_config: dict[str, Scalar]
    settings: ServerSettings
    rounds: Future[History | None] = field(default_factory=Future)


class SimulationFederation(Federation):
    """The simulation's federation step, with Ray started early: ``with SimulationFederation(...) as federation``.

    Entering starts Ray in a thread of its own, so its start (about 3 s here)
    overlaps the server's data loading and the import of Flower's simulation
    instead of preceding the first round; Flower's simulation then finds Ray
    running and uses it as it is. The server's TensorFlow import waits for
    ``workers_starting``: Ray's start has the two cores first, then that import
    runs beside the workers' own, and each worker warms up for the run
    (``warm_up_workers``) while the server evaluates the initial model. Leaving
    shuts Ray down, whether or not the rounds ran. The thread lives until
    then: Ray's processes are told to die with the thread that started them
    (Linux's parent-death signal is per thread).

    Flower's simulation runs in a thread of its own too, and the federation
    step returns as soon as the rounds are done: Flower then stops its workers
    and shuts Ray down (``RayBackend.terminate``), beside the saving of the
    results. Leaving waits for it.

    A sweep runs all its settings in one simulation (``run_for``, then
    ``SweepSetting``): its ServerApp drives each setting's rounds in turn, and
    Ray and its workers start once instead of once per setting.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings  # Also what the ServerApp's federation step needs of the run (--secagg).
        self.num_clients = settings.clients
        self.cpus_per_client = cpus_per_client(settings)
        self.ray_address = settings.ray_address
        self.data_home = settings.data_home
        self._ray_up: Future[None] = Future()
        # Done once Ray's workers are starting (or never will): the server's own TensorFlow import waits
        # for it (fedmnist.server.run), so that Ray, then the workers' imports, have the CPU first.
        self._workers_starting: Future[None] = Future()
        self.workers_starting = self._workers_starting
        self._leave = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_ray, name="ray", daemon=True)
        self._simulation: threading.Thread | None = None
        # The runs for the ServerApp to drive, in order; None: no more. The last run's settings say
        # keep_clients=False (a sweep's last setting, or a run of its own): the simulation ends after it.
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._job: _Job | None = None  # The run the ServerApp drives now.

    def __enter__(self) -> Self:
        # Ray starts a whole new local cluster when its API is used while it is down, as Flower's threads
        # do when Ray is shut down under a round in flight (__exit__): refused instead. Ray reads this
        # once, when it is imported: set before the threads that import it start.
        os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._jobs.put(None)  # A sweep stopped between two settings: its ServerApp waits for no other.
        if self._simulation is not None:
            # After the rounds, Flower is stopping its workers; after Ctrl-C, the run's strategy
            # refuses the next step (RunStrategy.stop), so Flower ends the round in flight and stops,
            # unless that round is long (two minutes for cnn-paper at E=5 here): then its workers are
            # stopped under it, and the round ends with their errors.
            self._simulation.join(timeout=STOP_JOIN_SECONDS if kind is not None else None)
            if self._simulation.is_alive():
                log.info("the round in flight is still running; stopping its workers")
                logging.getLogger("flwr").setLevel(logging.CRITICAL)  # Their errors, now expected.
                if not self.ray_address and _kill_local_workers():
                    self._simulation.join(timeout=STOP_JOIN_SECONDS)
                # Else Ray is shut down under Flower's threads, which may then end this process
                # (Ray's "core worker has already been shutdown") before it can say how it ended.
        self._leave.set()
        self._thread.join()
        _settle(self._workers_starting)

    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History | None:
        """Run ``server`` for its rounds with the virtual clients on Ray; return Flower's History once they are done."""
        return self.run_for(self.settings, server, config, client_config)

    def run_for(
        self, settings: ServerSettings, server: Server, config: ServerConfig, client_config: dict[str, Scalar]
    ) -> History | None:
        """``run`` for one run of ``settings`` (a sweep's setting); the first starts Flower's simulation."""
        job = _Job(server, config, client_config, settings)
        self._jobs.put(job)
        if self._simulation is None:
            # The simulation's thread imports Flower's simulation while Ray starts, then waits for Ray.
            self._simulation = threading.Thread(target=self._simulate, name="flower-simulation")
            self._simulation.start()
        try:
            wait_for(self._ray_up)  # Raises Ray's start-up error, if it failed.
            _take_sigterm_back_from_ray()
            # Not rounds.result(): a SIGTERM taken by a Ray thread would wait for the last round.
            return wait_for(job.rounds)
        except BaseException:
            self._stopping.set()  # Ctrl-C while Ray starts: Flower's simulation must not start after it.
            raise

    def _serve(self, grid: Grid, context: Context) -> None:
        """The ServerApp's main: each run's rounds through ``grid``, until the last run (or None)."""
        while (job := self._jobs.get()) is not None:
            self._job = job
            job.rounds.set_result(
                GridFederation(grid, context, job.settings).run(job.server, job.config, job.client_config)
            )
            if not job.settings.keep_clients:
                return

    def _simulate(self) -> None:
        """Flower's simulation of the ServerApp with the ClientApp; its error goes to the runs not done."""
        try:
            self._run_simulation()
        finally:
            _settle(self._workers_starting)  # Also when the workers never start: the server's TensorFlow waits for it.
            self._fail_waiting(RuntimeError("Flower's simulation ended before the rounds were done"))

    def _run_simulation(self) -> None:
        try:
            run_simulation = _flower_simulation()  # While Ray starts.
            from flwr.server import ServerApp

            from fedmnist.client.client_app import app as client_app
            from fedmnist.server.run_strategy import RunStopped
        except BaseException as error:  # noqa: BLE001  Handed to the federation step, which raises it.
            self._fail_waiting(error)
            return
        if self._ray_up.exception() is not None or self._stopping.is_set():  # Waits for Ray; the federation
            return  # step raises Ray's error, or was stopped meanwhile.
        _settle(self._workers_starting)  # Flower starts its workers (Ray actors) first thing.
        server_app = ServerApp()
        server_app.main()(self._serve)
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=self.num_clients,
                backend_config={"client_resources": {"num_cpus": self.cpus_per_client, "num_gpus": 0.0}},
            )
        except BaseException as error:  # noqa: BLE001  The server's own errors come back here too.
            if self._job is None or not self._job.rounds.done():
                self._fail_waiting(error)
            elif not isinstance(error, RunStopped):
                log.warning("Flower's simulation failed after the rounds: %s", error)

    def _fail_waiting(self, error: BaseException) -> None:
        """Give ``error`` to the run the ServerApp drove, if not done, and to every run not yet taken."""
        waiting = [self._job]
        while not self._jobs.empty():
            waiting.append(self._jobs.get_nowait())
        for job in waiting:
            if job is not None and not job.rounds.done():
                job.rounds.set_exception(error)

    def _keep_ray(self) -> None:
        """Start Ray, keep it until the federation is left, then shut it down (this thread's whole life)."""
        import ray

        try:
            self._start_ray()
        except BaseException as error:  # noqa: BLE001  Handed to the federation step, which raises it.
            self._ray_up.set_exception(error)
            return
        self._ray_up.set_result(None)
        self._leave.wait()
        ray.shutdown()

    def _start_ray(self) -> None:
        """``ray.init`` as Flower's Ray backend would call it, quiet: Ray's own output would bury the round lines."""
        import ray

        if self.data_home:
            os.environ[DATA_HOME_VARIABLE] = self.data_home  # Ray's workers inherit this process's environment.
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Silences a tip about GPUs; there are none.
        # The workers import the project from the driver's sys.path, as Flower's backend arranges it.
        pythonpath = os.pathsep.join(filter(None, [os.pathsep.join(sys.path), os.environ.get("PYTHONPATH")]))
        os.environ["PYTHONPATH"] = pythonpath
        init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
        if self.ray_address:
            # Another machine's workers get the path (and the data's folder) through a runtime environment
            # (Flower's way): they do not inherit this process's environment.
            variables = {"PYTHONPATH": pythonpath, **({DATA_HOME_VARIABLE: self.data_home} if self.data_home else {})}
            init_args.update(address=self.ray_address, runtime_env={"env_vars": variables})
        # A local Ray's workers inherit this process's environment, PYTHONPATH included: a runtime
        # environment would only add its agent's set-up (1.4 s before the first worker, measured here).
        ray.init(**init_args)
        if not self.ray_address:
            _stop_autoscaler_monitor()


class SweepSetting(Federation):
    """One setting of a sweep on the simulation: its rounds in the sweep's one simulation (``run_for``)."""

    def __init__(self, simulation: SimulationFederation, settings: ServerSettings) -> None:
        self.simulation, self.settings = simulation, settings
        self.workers_starting = simulation.workers_starting

    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History | None:
        return self.simulation.run_for(self.settings, server, config, client_config)


def _flower_simulation() -> Callable[..., None]:
    """Flower's ``run_simulation``, imported without TensorFlow.

    Importing ``flwr.simulation`` imports TensorFlow when it is installed, for
    a GPU helper of its actors (``enable_tf_gpu_growth``) that this process
    never calls. Here that import took 7 s and sat between Ray's start and the
    first worker's; the server imports TensorFlow later, beside the workers.
    Python reads a None in ``sys.modules`` as "not installed", which Flower's
    module expects. Nothing else imports TensorFlow meanwhile: the server's
    import waits for ``workers_starting``.
    """
    if "tensorflow" in sys.modules:
        from flwr.simulation import run_simulation
    else:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
        try:
            from flwr.simulation import run_simulation
        finally:
            del sys.modules["tensorflow"]
    # Importing Flower's simulation turns every DeprecationWarning on ("once") for the whole
    # process, and TensorFlow's notes then reach the console; back to Python's default.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from flwr.server.superlink.fleet.vce import vce_api

    vce_api.Queue = PromptQueue  # type: ignore[misc]  # Its message queues (PromptQueue says why).
    return run_simulation


def _stop_autoscaler_monitor() -> None:
    """Stop the local Ray's autoscaler monitor, which a cluster of one machine never uses.

    Ray's shutdown stops it last, after the GCS it reports its end to: it then
    waited 1 s for the GCS, and Ray 1 s for it, at the end of every simulation
    (``ray.shutdown`` 1.35 s here; 0.15-0.35 s without it). ``ray.init`` has no
    flag to leave it out (``ray start`` has ``--no-monitor``).
    """
    from ray._private import worker

    node = worker._global_node  # None if Ray is not up in this process.
    try:
        if node is not None:
            node.kill_monitor(check_alive=False)
    except Exception as error:  # noqa: BLE001  A private API: if it changes, Ray's shutdown takes a second longer.
        log.debug("could not stop Ray's autoscaler monitor: %s", error)


def _kill_local_workers() -> bool:
    """Kill this machine's Flower workers (Ray actors) under their messages; False if Ray could not say which.

    Flower's threads waiting for their replies then get errors and end the
    simulation, before Ray shuts down. Ray's public state API needs its
    dashboard, which the simulation does not start; its GCS tables say as much.
    """
    from ray._private import state

    try:
        actors = state.actors().values()
    except Exception as error:  # noqa: BLE001  A private API: if it changes, Ray stops under the round as before.
        log.debug("could not list Ray's actors: %s", error)
        return False
    for actor in actors:
        if actor.get("ActorClassName") == "ClientAppActor" and actor.get("State") == "ALIVE" and actor.get("Pid"):
            try:
                os.kill(int(actor["Pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return True


def _settle(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def cpus_per_client(settings: ServerSettings) -> float:
    """Ray CPUs per virtual client: ``--sim-cpus-per-client``, else one Ray worker per core but one on this machine.

    Flower runs as many Ray workers as Ray's CPUs divided by this. The core
    left over is the server's (Flower's in-memory SuperLink, aggregation, the
    held-out evaluation). On 2 cores here one worker with both did rounds as
    fast as two workers with one each, and round 1 in 9.8-12.2 s against
    12.3-12.9 s (three runs each): one TensorFlow fewer imported beside the
    server's. A cluster (``--ray-address``) runs one worker per CPU by default.
    """
    if settings.sim_cpus_per_client is not None:
        return settings.sim_cpus_per_client
    if settings.ray_address:
        return 1.0
    return _local_cpus_per_worker()


def simulation_workers(requested: float | None) -> int:
    """How many Ray workers a local simulation runs for ``--sim-cpus-per-client`` (None: the default)."""
    cpus = os.cpu_count() or 1
    return max(1, int(cpus / (requested or _local_cpus_per_worker())))


def _local_cpus_per_worker() -> float:
    cpus = os.cpu_count() or 1
    workers = max(1, cpus - 1)
    # Rounded down to Ray's step, or the last worker would not fit (7 x 8/7 CPUs, rounded up, is over 8).
    return math.floor(cpus / workers * RAY_STEPS_PER_CPU) / RAY_STEPS_PER_CPU
