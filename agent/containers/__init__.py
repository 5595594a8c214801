"""Containers: OCI bundles run by crun/runc under conmon, over overlayfs root filesystems.

Modules, in the order a container meets them:
- `spec`: the OCI config.json, a pure function (docker's defaults for capabilities,
  masked paths, devices; resources from --memory/--cpus/--pids-limit);
- `rootfs`: the overlay mount and lookups inside it (command path, user);
- `prepare`: mounts, /etc files and the bundle for one start;
- `runtime`: crun/runc and conmon as programs;
- `monitor`: pidfd-based exit notification; `restart`: restart policies;
- `logs`, `cgroups`: the conmon log and the cgroup files read back;
- `record`: the on-disk record that makes live restore possible;
- `engine`: the lifecycle that ties them together.
"""
