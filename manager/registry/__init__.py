"""pyswarm's registry server: the OCI distribution API over a directory (`pyswarm
registry serve`; in issue 4 every manager runs the same server for the cluster).

Modules:
- `storage`: the on-disk layout and its crash-safety invariants (read its docstring);
  the only module that touches files.
- `app`: the aiohttp application: routing of `/v2/...`, Basic auth, the endpoint
  handlers, TLS and the foreground `serve` loop.
- `auth`: htpasswd (bcrypt) Basic authentication.
- `errors`: the spec's error codes and JSON error body.

Invariants:
- Nothing a client sends is trusted as a path: repository names follow the
  distribution grammar (lowercase components, no `..`, at most 255 characters), tags
  `[\\w][\\w.-]{0,127}`, digests `sha256:` + 64 hex; anything else is NAME_INVALID,
  TAG_INVALID or DIGEST_INVALID before storage is touched.
- A blob enters the store only after its bytes hashed to the digest the client named;
  it moves into place with fsync + `os.replace`, so an interrupted or mismatched upload
  never becomes a blob. Upload sessions live on disk and survive a restart.
- A manifest is stored only when every blob it references (config, layers) is linked
  into the repository, or for an index every child manifest is; its exact bytes are
  kept and served back, so its digest never changes.
- Bodies are streamed to disk and bounded (`max_body` for blobs, 4 MiB for manifests).

    >>> app = make_app(Config(root=Path("/var/lib/pyswarm/registry")))
    >>> web.run_app(app, port=5000)  # or serve(config, host=..., port=..., ssl_context=None)
"""
