"""`pyswarm build`: Dockerfiles into images, docker's classic builder with a layer cache.

Modules, from the bottom up:
- `dockerfile`: parses a Dockerfile into instructions; `$VAR` substitution.
- `ignore`: `.dockerignore` patterns; walking and tarring a context (the client uses
  it too, to send less).
- `layers`: OCI layer tars made from a container's overlayfs upper dir (whiteouts
  `.wh.NAME`, opaque dirs `.wh..wh..opq`) or from COPY sources (with `--chown`),
  streamed through gzip and sha256 into the blob store in one pass.
- `cache`: the build cache, `<data-root>/build/cache.json`: cache key → image ID.
- `metadata`: the config-only instructions (CMD, ENV, LABEL, HEALTHCHECK, ...).
- `sources`: COPY/ADD sources (inside the context or a `--from` stage's merged
  view), ADD's archive extraction, and planning the destination entries.
- `run`: a RUN step's container: created, started, output followed, removed.
- `stage`: a stage's state; splitting a Dockerfile into stages.
- `builder`: executes the stages, one step at a time; `service`: the gRPC-facing
  `build()` that unpacks the context and turns the builder's output into `Progress`.

Design. Every step's result is an (untagged) image in the engine's image store, as in
docker's classic builder: RUN needs an image to create its container from, and the
cache needs something that outlives the build. A step is:
- metadata (ENV, CMD, LABEL, USER, ...): a new config, no layer; its history entry
  has `empty_layer: true`.
- RUN: a real container of the engine, created from the stage's current image with
  the stage's env (+ the build args in effect, for RUN only), workdir and user, on
  network `none`, with the image's ENTRYPOINT ignored. Its output is streamed as it
  comes; when it exits 0, its writable layer (the overlayfs upper dir) becomes the
  layer: whiteout devices → `.wh.NAME`, opaque dirs → `.wh..wh..opq`. A RUN always
  makes a layer, as docker does, even an empty one. The container is removed in any
  case.
- COPY/ADD: a layer made straight from the sources (no container), owned by root or
  `--chown`; missing parent directories of the destination are created 0755.
- WORKDIR: a layer with the directory when the stage does not have it yet.

Cache key (sha256 over a canonical JSON list): the parent image ID; the instruction
after substitution; for COPY/ADD the digest of the sources (relative paths, modes,
owners, contents and link targets, not times); for RUN the build args in effect. A hit
is used only if the image it names still exists; `--no-cache` skips lookups (results
are still recorded). Since a step's key includes its parent's ID, a change re-runs that
step and every later one of the stage, and nothing before it.

Invariants:
- Nothing is left by a failed build except the images of the steps that succeeded
  (the cache's own): no build container, no partial layer blob (blobs are written
  under an image-store lease and collected with it unless an image references them),
  no temporary directory or mount under `<data-root>/tmp`.
- RUN runs only in a container whose root is the stage's layers; no Dockerfile input
  is ever resolved against the host's root: sources are looked up inside the unpacked
  context (`..` refused), `--from` stages through a read-only overlay of their layers.
"""
