"""MNIST and Fashion-MNIST: where the rows come from (OpenML, IDX files, caches) and how clients split them."""
