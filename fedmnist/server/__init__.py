"""The server's run: the strategies, the run strategy around them, update checks, held-out evaluation."""
