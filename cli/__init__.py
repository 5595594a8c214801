"""The `pyswarm` command (click): parses, calls the daemon through `api`, prints.

`cli.main` is the entry point and keeps imports lazy, so `pyswarm ps` does not pay
for grpc until it talks to the daemon. `cli.daemon` is the one place that wires the
engine (`agent`), networking (`overlay`) and, later, the manager together.
"""
