"""`mnist-pipeline`: the command line. Prefect and TensorFlow load only in the commands that need them."""
