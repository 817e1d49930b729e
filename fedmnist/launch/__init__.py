"""`./run.sh`: the launcher that starts the server, clients and services, and TLS and node keys."""
