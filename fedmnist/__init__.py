"""fedmnist: federated MNIST with Flower and Keras.

One module per responsibility; the Layout section of README.md says which does what.
``server.py``, ``client.py`` and ``run.sh`` (via ``launcher``) are the entry points.
"""
