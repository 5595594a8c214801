"""The registry client: pull, push and login against any OCI distribution (v2) registry.

- `client`: one repository on one registry over httpx (scheme choice, TLS, manifests,
  blobs, upload sessions); errors are `api.errors` in docker's words.
- `auth`: `WWW-Authenticate` challenges, Basic, and the Bearer token flow.
- `service`: what the engine's servicer calls (`pull`, `push`, `login`), moving images
  between a registry and the image store with per-layer `Progress` messages.

Invariants: every blob is verified against its digest before it is visible in the
store (the blob store writes to a temporary file and renames); everything a pull writes
is pinned by a lease until the image record references it, so a failed pull leaves
nothing behind. Unqualified names resolve to the daemon's `--default-registry`; when
that is empty, they are never pulled (tests rely on it: no public registry, ever).
"""
