"""The pipeline's five stages, one Prefect task each: split, preprocess, train, evaluate, register.

Each module is a thin task over `mnist_pipeline.core` and imports no other stage; the flows in
`flows/` chain them. Installed as `mnist_pipeline.tasks`.
"""
