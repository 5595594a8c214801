"""The engine's image store: OCI images by content, and their layers unpacked for overlayfs.

Modules, from the bottom up:
- `reference`: image references (`busybox`, `localhost:5000/app:1`, `name@sha256:..`)
  parsed by docker's grammar into their familiar form.
- `blobs`: a content-addressed blob store (`sha256/<hex>`); a blob appears under its
  digest only complete, verified and fsynced.
- `tarsafe`: unpacks a layer tar into a directory, safe against hostile tars (no write
  ever lands outside the directory), turning OCI whiteouts into overlayfs ones and
  computing the layer's diff_id on the way.
- `oci`: the OCI documents (manifests, indexes, configs) and their media types;
  `changes`: docker's `--change` instructions for `import`.
- `model`: `Image` and the record the store keeps of one; `lease`: `Lease`, which
  keeps blobs and layers alive while an operation uses them, and writes new ones.
- `store`: `ImageStore`, docker's image semantics (IDs are config digests, tags in
  `repositories.json`, rmi/prune rules) over the blob store and the unpacked layers.
- `archive`: `save`/`load` of tars that are both an OCI layout and a docker-archive.

Invariants the whole package keeps:
- Everything is addressed by sha256 and verified when it comes in (blob digests as
  they are written, diff_ids as layers are unpacked) and when it is unpacked again.
- Nothing partial is visible: blobs, layer dirs and metadata files are written aside
  and renamed into place; a failed import or load leaves no blob, layer, record or tag.
- A blob or layer dir is deleted only when no image references it and no operation
  in progress (a `Lease`) uses it.

`agent.images` imports only `api`; the container code gets layer directories from
`ImageStore.layer_dirs(image)`, lowest layer first (overlayfs's `lowerdir=` lists the
uppermost first, so it reverses them).
"""
