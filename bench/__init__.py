"""The benchmark: the pipeline beside the TensorFlow tutorial (`python bench/run.py`)."""
