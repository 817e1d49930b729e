"""fedmnist: federated MNIST with Flower and Keras.

One folder per part of the architecture (docs/architecture.md draws how they fit):

- ``settings/``: the run's defaults and the settings object with its flags.
- ``data/``: MNIST and Fashion-MNIST rows (OpenML, IDX files, caches) and the clients' partitions.
- ``model/``: the Keras models and the training loop.
- ``client/``: the Flower client that trains, the classic client process, the ClientApp, faults.
- ``server/``: the server's run, strategies, update checks, held-out evaluation, the central baseline.
- ``privacy/``: differential privacy and SecAgg+.
- ``runtimes/``: the Ray simulation, the Deployment Runtime, the ServerApp, ``flwr run``.
- ``results/``: round records, the live log, History, checkpoints, plots, TensorBoard.
- ``launch/``: ``./run.sh``'s launcher and SuperNode keys.
- ``dashboard/``: the live dashboard, its API and the WebSocket clients' relay.
- ``sweep.py``: grids of runs and their comparison; ``common/``: errors, atomic writes, CLI plumbing, TLS.

``server.py``, ``client.py`` and ``run.sh`` (via ``launch.launcher``) are the entry points.
"""
