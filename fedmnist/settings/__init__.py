"""The run's settings: their defaults, the settings object and its command-line flags."""
