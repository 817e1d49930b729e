"""Differential privacy (clipping, noise, the privacy ledger) and SecAgg+."""
