"""`mnist-pipeline`: the command line. Prefect and TensorFlow load only in the commands that need them.

main.py assembles the parser (`build_parser`) from one module per command (run, sweep, predict,
registry, serve, team), each with `add_parser(subparsers)`; options.py holds what they share.
"""
