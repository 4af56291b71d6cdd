"""Package data: the four MNIST IDX files in mnist/ (see mnist/README.md), installed with the package."""
