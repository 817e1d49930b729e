"""``python -m fedmnist.dashboard``: see ``fedmnist.dashboard.serve``."""

from fedmnist.dashboard.serve import main

main()
