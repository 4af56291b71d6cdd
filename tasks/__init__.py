"""The pipeline's stages, one module each: split, preprocess, train, evaluate, register.

Each stage module holds a Prefect task and the plain functions behind it; the flow in
`flows/mnist_flow.py` chains the tasks. TensorFlow is imported inside the functions that need it.
"""

import os

# TensorFlow's C++ info and warning lines (CPU features, CUDA probing) would drown the stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
