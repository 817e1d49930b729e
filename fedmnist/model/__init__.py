"""The Keras models and the training loop every client and the server's baseline share."""
