"""fedmnist: federated MNIST with Flower and Keras.

One module per responsibility: ``config`` (defaults), ``data`` (MNIST loading,
caching and partitioning), ``model`` (the Keras model and its fast training
loop), ``client`` (the Flower ``NumPyClient``), ``strategy`` (FedAvg with
weighted metrics), ``recorder`` (per-round progress and the live JSONL log),
``history`` (saving and loading results), ``plots`` (graphs), ``atomic``
(crash-safe file writes) and ``cli`` (argument parsing and clean errors).
"""
