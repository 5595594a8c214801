"""The node engine: what `dockerd` is for one host, plus (later) the swarm agent.

- `images/`: a content-addressed store of OCI images (blobs by sha256, manifests,
  configs) and the layers unpacked for overlayfs; safe against hostile tars.
- `containers/`: containers run by an OCI runtime (crun, or runc) from a bundle
  whose config.json we write, each watched by its own conmon, which holds stdio,
  writes the log and records the exit code. Everything about a container lives on
  disk under `<data-root>/containers/<id>/`, so a restarted daemon adopts running
  containers again (live restore).
- `volumes.py`: named and anonymous volumes under `<data-root>/volumes/`.

`agent` never imports `manager` or `overlay`; networking is injected by the daemon
wiring through the `NetworkDriver` protocol in `containers/network.py`.
"""
