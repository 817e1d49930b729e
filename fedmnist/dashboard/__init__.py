"""The live dashboard and web API: a FastAPI app that reads a run's history files.

``./run.sh`` starts it beside the Flower server (``--dashboard-port``, default
10000); ``./run.sh dashboard`` serves it alone, to browse finished runs. It only
reads what the server writes (``fedmnist.results.live_log``, ``fedmnist.results.history``), so it never sits in the
training path. Modules: ``runs`` (finding and reading runs), ``schemas`` (the
typed JSON the API returns), ``live`` (WebSocket events), ``weights`` (the
latest global model), ``app`` (routes) and ``serve`` (flags and the uvicorn server).
"""
