"""Compose files for `pyswarm stack`: `load` reads and merges them safely, `normalize` and
`model` (separate modules) turn the merged document into typed service specs."""
