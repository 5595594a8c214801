"""Shared fixtures. Everything a test creates (processes, namespaces, mounts) it
removes by name or PID; tests never end processes they did not start."""
