"""What the stages, the flows, the command line and the service share. Nothing here imports Prefect.

Sub-packages by concern, each importing only those before it in this list (tests/test_layout.py
checks the order):

    support     errors, atomic files, fault injection, settings, statistics, a quiet TensorFlow import
    storage     the artifact store (a folder or an S3-compatible URL) and where a run writes
    data        MNIST's files, the cached split, extra pictures, reading users' pictures, the review queue
    modelling   presets, parameters, training, prediction, the SavedModel export, the light (LiteRT) model
    evaluation  scoring on the test split, plots, the promotion gate
    registry    versions, the production pointer and the decision log, over a folder or a store
    runs        what a run or a sweep returns
    tracking    the MLflow view: runs, sweeps, the registry's versions and production alias
"""
