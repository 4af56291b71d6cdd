"""MNIST's files, the cached train/validation/test split, extra labelled pictures and users' pictures."""
