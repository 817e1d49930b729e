"""Attacks a client can be told to run: in-bound model and data poisoning from the robustness literature.

``catalogue`` names them and says which clients of a run attack; ``model_poisoning``
turns honest updates into poisoned ones; ``data_poisoning`` poisons a client's rows
(label flipping, a pixel-pattern backdoor) and measures a backdoor's success;
``collusion`` gives colluding clients the honest updates they share.
"""
