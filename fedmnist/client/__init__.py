"""The Flower client: the NumPyClient that trains, the classic client process, the ClientApp, faults."""
