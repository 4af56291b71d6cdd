"""The MNIST training pipeline: Prefect flows (`mnist_pipeline.flows`) over five stages
(`mnist_pipeline.tasks`), over a core that imports no Prefect (`mnist_pipeline.core`), with the
`mnist-pipeline` command line (`mnist_pipeline.cli`).

TensorFlow is imported inside the functions that need it.
"""

import os

# TensorFlow's C++ info and warning lines (CPU features, CUDA probing) would drown the stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
