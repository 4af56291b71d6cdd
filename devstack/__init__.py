"""Tools that run from a checkout only, not shipped in the wheel: a local Prefect server with the
project deployed (`local_server`) and the team stack on one machine (`team`)."""
