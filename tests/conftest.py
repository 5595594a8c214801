"""Shared fixtures. Everything a test creates (processes, namespaces, mounts) it
removes by name or PID; tests never end processes they did not start."""

# Real-daemon fixtures (`daemon`, `make_daemon`, `busybox`) for integration tests and
# benchmarks alike.
pytest_plugins = ("tests.daemons",)
