"""Every default of the app, in one place.

``server.py``, ``client.py``, ``run.sh --help`` and the tests all read these
values, so changing a default here changes it everywhere.
"""

from __future__ import annotations

from itertools import pairwise

# Federation.
ROUNDS = 40  # FedAvg rounds the server runs.
CLIENTS = 3  # Clients the server waits for and trains with every round.
PORT = 8000  # Port the Flower server listens on.
SERVER_HOST = "0.0.0.0"  # Interface server.py binds to (all of them: its clients may be on other machines).
LOCAL_HOST = "127.0.0.1"  # Interface ./run.sh's server binds to unless --remote-clients: its clients are local.
CLIENT_SERVER_ADDRESS = f"127.0.0.1:{PORT}"  # Where a client looks for the server.
CLIENT_WAIT_TIMEOUT = 300.0  # Seconds the server waits for all clients to connect.
CONNECT_TIMEOUT = 60.0  # Seconds a client keeps retrying an unreachable server.
RECONNECT_TIMEOUT = 600.0  # Seconds a client that lost its server keeps retrying: outages of minutes pass.
ROUND_TIMEOUT = 120.0  # Seconds a round waits for its clients' answers; late ones count as failures.
# classic: Flower's start_server/start_client pair, one process per client (fastest for a few clients).
# simulation: Flower's Simulation Runtime, virtual clients on a few Ray workers (fedmnist.runtimes.simulation).
# deployment: Flower's Deployment Runtime, a local SuperLink and one SuperNode per client (fedmnist.runtimes.deployment).
RUNTIMES = ("classic", "simulation", "deployment")
RUNTIME = "classic"

# Data.
DATASETS = ("auto", "openml", "mnist-5k", "fashion-mnist")  # auto: MNIST from OpenML if reachable or cached, else 5k.
DATASET = "auto"
# Offline Fashion-MNIST: where Debian's dataset-fashion-mnist package puts its IDX files.
FASHION_IDX_FOLDER = "/usr/share/datasets/fashion-mnist"
IDX_PREFIX = "idx:"  # --dataset idx:DIR: a folder of MNIST's four IDX files (fedmnist.data.idx).
SEED = 42  # Seeds the client partitions and model initialisation.
PARTITION = "iid"  # How rows are split among clients: iid, dirichlet:ALPHA or shards:K.
VALIDATION_FRACTION = 0.1  # Share of each client's rows kept for its local evaluate.
HOLDOUT_PER_CLASS_5K = 100  # Server test images per digit carved out of the 5k set.

# Strategy (server side).
STRATEGIES = (
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "normclip",
    "centeredclip",
)
# The default aggregation, chosen from measurements (docs/robustness.md, bench/robust_default.py): centered
# clipping costs the default run nothing without attackers and keeps it from collapsing with them. SecAgg+
# and DP need a plain mean (the server sees only the sum; the accountant bounds a mean): FedAvg there.
AUTO_STRATEGY = "auto"
ROBUST_STRATEGY = "centeredclip"
PLAIN_MEAN_STRATEGY = "fedavg"
STRATEGY = AUTO_STRATEGY  # fedmnist.server.strategies maps each name to Flower's class.
FRACTION_FIT = 1.0  # Share of the clients trained each round.
FRACTION_EVALUATE = 1.0  # Share of the clients that evaluate the global model each round.
PROXIMAL_MU = 0.01  # FedProx's mu: weight of the proximal term clients add to their loss.
SERVER_MOMENTUM = 0.9  # FedAvgM's server momentum (Hsu et al. 2019 use 0.9).
SERVER_LEARNING_RATE = 1.0  # FedAvgM's server learning rate: the step along the momentum buffer.

TRIMMED_BETA = 0.2  # fedtrimmedavg cuts this share of each side per coordinate unless --assumed-attackers says.

# Attacks (fedmnist.attacks): none unless --attack and --malicious say which share of the clients attack.
ATTACK = "none"
MALICIOUS = 0.0

MAX_UPDATE_NORM_FACTOR = 5.0  # Updates this many times farther from the global model than the median are dropped.
# A client's claimed example count weighs at most this many times the median of the other clients'
# counts. Honest shares differ by less: 3 clients under dirichlet:0.1 here hold 0.5x-2x the median.
MAX_EXAMPLES_FACTOR = 10.0
# A run whose last this many rounds accepted no update learns nothing: it stops with an error.
MAX_ROUNDS_WITHOUT_UPDATE = 3

# Differential privacy (fedmnist.privacy.dp), off unless --dp-noise is given.
DP_SIDES = ("server", "client")  # Where updates are clipped: Flower's server-side or client-side fixed clipping.
DP_SIDE = "server"
DP_DELTA = 1e-5  # Reported epsilon is for this delta; well below 1/clients for any run here.
DP_STRATEGIES = ("fedavg", "fedprox")  # The accountant's bound needs the round's update to be a plain mean.

# Secure aggregation (fedmnist.privacy.secagg, --secagg): Flower's SecAgg+ on the Flower runtimes.
SECAGG_SHARES = 3  # Each client's secrets are split among this many clients (Flower needs more than 2).
SECAGG_THRESHOLD = 2  # Shares that recover a secret: up to shares - threshold of a client's neighbours may drop.

# Local training, sent to clients in every round's fit config.
LOCAL_EPOCHS = 1
BATCH_SIZE = 32
LEARNING_RATE = 0.001  # Adam.

# Model.
MODELS = ("mlp", "dense32", "cnn", "2nn", "cnn-paper")
MODEL = "mlp"  # Best accuracy per second of the default run here (docs/configuration.md, Models).
# TensorFlow's op determinism, on unless this variable is "0" (bench/determinism.py measures its cost).
OP_DETERMINISM_VARIABLE = "FEDMNIST_OP_DETERMINISM"
HIDDEN_UNITS = 128  # Of the mlp: 784-128-10.
NUM_CLASSES = 10
IMAGE_PIXELS = 784  # 28 x 28, flattened.
# The dense models' hidden layer widths: WebSocket clients train these (their layers are read off the
# weights' shapes), and the dashboard sizes its message cap for the largest.
DENSE_HIDDEN_LAYERS = {"mlp": (HIDDEN_UNITS,), "dense32": (32,), "2nn": (200, 200)}
DENSE_MODELS = tuple(DENSE_HIDDEN_LAYERS)


def dense_weight_count(model: str) -> int:
    """Weights and biases of dense model ``model`` (2nn: 199,210), without building it."""
    widths = (IMAGE_PIXELS, *DENSE_HIDDEN_LAYERS[model], NUM_CLASSES)
    return sum(inputs * outputs + outputs for inputs, outputs in pairwise(widths))


# Dashboard (fedmnist.dashboard), started by run.sh beside the server.
DASHBOARD_PORT = 10000
# The join token a WebSocket client must show (/ws?token=...): ./run.sh makes one unless this variable gives it.
WS_TOKEN_VARIABLE = "FEDMNIST_WS_TOKEN"
DASHBOARD_HOST = "127.0.0.1"  # Local only; --dashboard-host 0.0.0.0 shows it to the network.
CORS_ORIGINS = "*"  # Comma-separated origins whose pages may call the API; * = any (fine on localhost).
DASHBOARD_POLL_SECONDS = 0.25  # How often a WebSocket looks for new rounds in the history files.
DASHBOARD_NICENESS = 10  # The dashboard runs at lower CPU priority than server and clients.
WS_MAX_BYTES = 256 * 1024  # Largest WebSocket message the dashboard accepts; bigger ones close the socket (1009).
MAX_HEADER_BYTES = 64 * 1024  # Largest request head (request line and headers) the dashboard reads.

# Metric keys clients report and the server aggregates, weighted by examples.
METRIC_KEYS = ("accuracy", "loss")
PARTICIPANT_KEY = "participant"  # A text metric: a WebSocket participant's name, for log lines.
PARTICIPANT_NAME_CHARS = 40
NODE_KEY = "node"  # A text metric: the Ray node (its address) a virtual client trained on.
# The metrics that may be text, and their longest accepted length; every other metric is a number.
TEXT_METRICS = {PARTICIPANT_KEY: PARTICIPANT_NAME_CHARS, NODE_KEY: 64}
