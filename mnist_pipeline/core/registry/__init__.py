"""The model registry: numbered versions, a production pointer and a decision log."""
