"""What a run leaves behind: round records, the live log, History, checkpoints, plots, TensorBoard."""
