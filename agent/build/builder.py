"""The builder: runs a parsed Dockerfile's stages, one step at a time, with the cache.

`Builder.run()` yields the build's output (docker's classic builder's words) as bytes
and leaves the final image's ID in `image_id`; a bad Dockerfile or a failing step
raises a `PyswarmError` with one line to show. Every step ends with the stage pointing
at an image in the store (see the package doc); a step is looked up in the cache first
and, on a hit, only adopts the image the cache names.

Order within a build: stages up to the target, in Dockerfile order; `--label`s after
the last step (one more cached config-only image); tags last, so a failed build never
moves a tag.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from api import engine_pb2
from api.errors import InvalidArgument, NotFound

from ..containers.engine import ContainerEngine
from ..images import oci
from ..images.store import Image, ImageStore
from . import metadata, sources
from .cache import BuildCache, cache_key
from .dockerfile import EXPANDED, Dockerfile, Instruction, arg_declaration, expand, words
from .layers import Entry, copy_tar, sources_digest, store_layer, upper_dir_tar
from .run import RunSpec, build_container, run_output
from .stage import Layer, Stage, parse_from, scratch_config, short, split_stages


class Builder:
    def __init__(
        self,
        *,
        images: ImageStore,
        containers: ContainerEngine,
        options: engine_pb2.BuildOptions,
        dockerfile: Dockerfile,
        context: Path,
        work: Path,
        cache: BuildCache,
        cancelled: Callable[[], bool],
        pull: Callable[[str], Iterator[bytes]],
    ) -> None:
        self.images = images
        self.pull = pull  # pulls a base image, yielding progress lines
        self.containers = containers
        self.options = options
        self.dockerfile = dockerfile
        self.context = context
        self.work = work
        self.cache = cache
        self.cancelled = cancelled
        self.build_args = dict(options.build_args)
        self.used_args: set[str] = set()
        self.meta_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        self.image_id = ""
        self.step = 0
        self.total = 0

    # ---- the whole build ------------------------------------------------------------

    def run(self) -> Iterator[bytes]:
        meta, groups = split_stages(self.dockerfile.instructions)
        for instruction in meta:  # first: FROM lines, --target included, may use them
            self._meta_arg(instruction)
        groups = groups[: self._target_index(groups) + 1]
        self.total = len(meta) + sum(len(group) for group in groups)
        for instruction in meta:
            yield self._header(instruction)
        for index, group in enumerate(groups):
            yield from self._stage(index, group)
        final = self.stages[-1]
        if self.options.labels:
            self._build_labels(final)
        if final.image is None:  # FROM scratch and nothing else
            self._commit(final, cache_key(parent="scratch", instruction=""), created_by="")
        assert final.image is not None
        self.image_id = final.image.id
        unused = sorted(set(self.build_args) - self.used_args)
        if unused:
            yield f"[Warning] One or more build-args {unused} were not consumed\n".encode()
        yield f"Successfully built {short(self.image_id)}\n".encode()
        for tag in self.options.tags:
            self.images.tag(self.image_id, tag)
            yield f"Successfully tagged {tag}\n".encode()

    def _target_index(self, groups: list[list[Instruction]]) -> int:
        target = self.options.target.lower()
        if not target:
            return len(groups) - 1
        for index, group in enumerate(groups):
            _, name = parse_from(expand(group[0].rest, self.meta_args, escape=self._escape))
            if name == target:
                return index
        raise InvalidArgument(f"failed to reach build target {self.options.target} in Dockerfile")

    def _header(self, instruction: Instruction) -> bytes:
        self.step += 1
        return f"Step {self.step}/{self.total} : {instruction.original}\n".encode()

    def _meta_arg(self, instruction: Instruction) -> None:
        name, default = arg_declaration(
            expand(instruction.rest, self.meta_args, escape=self._escape)
        )
        value = self._arg_value(name, default)
        if value is not None:
            self.meta_args[name] = value

    def _arg_value(self, name: str, default: str | None) -> str | None:
        if name in self.build_args:
            self.used_args.add(name)
            return self.build_args[name]
        return default

    # ---- a stage --------------------------------------------------------------------

    def _stage(self, index: int, group: list[Instruction]) -> Iterator[bytes]:
        yield self._header(group[0])
        base, name = parse_from(expand(group[0].rest, self.meta_args, escape=self._escape))
        stage = Stage(index=index, name=name or str(index))
        if self._should_pull(base):
            yield from self.pull(base)
        image = self._base_image(base)
        if image is None:
            stage.config = scratch_config()
        else:
            stage.adopt(image)
            yield f" ---> {short(image.id)}\n".encode()
        self.stages.append(stage)
        for instruction in group[1:]:
            if self.cancelled():
                raise InvalidArgument("build cancelled")
            yield self._header(instruction)
            yield from self._instruction(stage, instruction)

    @property
    def _escape(self) -> str:
        return self.dockerfile.escape

    def _should_pull(self, reference: str) -> bool:
        """As docker's builder: pull a base image that is missing, or any with --pull
        (never `scratch` or an earlier stage)."""
        if reference.lower() == "scratch" or self._stage_named(reference) is not None:
            return False
        if self.options.pull:
            return True
        try:
            self.images.resolve(reference)
        except NotFound:
            return True
        return False

    def _base_image(self, reference: str) -> Image | None:
        if reference.lower() == "scratch":
            return None
        named = self._stage_named(reference)
        if named is not None:
            return named.image
        try:
            return self.images.resolve(reference)
        except NotFound:
            raise NotFound(f"No such image: {reference}") from None

    def _stage_named(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name.lower() or (name.isdigit() and stage.index == int(name)):
                return stage
        return None

    def _instruction(self, stage: Stage, instruction: Instruction) -> Iterator[bytes]:
        command = instruction.command
        text = instruction.rest
        if command in EXPANDED:
            text = expand(text, {**stage.args, **stage.env}, escape=self._escape)
        if command == "ONBUILD":
            raise InvalidArgument("ONBUILD is not supported by pyswarm build")
        if command == "RUN":
            yield from self._run(stage, instruction)
        elif command in ("COPY", "ADD"):
            yield from self._copy(stage, instruction, text)
        elif command == "WORKDIR":
            yield from self._workdir(stage, text)
        elif command == "ARG":
            yield from self._arg(stage, text)
        else:
            yield from self._metadata(stage, instruction, text)

    # ---- steps ----------------------------------------------------------------------

    def _step(
        self, stage: Stage, key: str, execute: Callable[[], Iterator[bytes]]
    ) -> Iterator[bytes]:
        hit = None if self.options.no_cache else self.cache.get(key)
        if hit is not None:
            stage.adopt(self.images.resolve(hit))
            yield b" ---> Using cache\n"
        else:
            yield from execute()
        assert stage.image is not None
        yield f" ---> {short(stage.image.id)}\n".encode()

    def _commit(
        self,
        stage: Stage,
        key: str,
        *,
        created_by: str,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        layer: Layer | None = None,
    ) -> None:
        config = copy.deepcopy(stage.config)
        config.setdefault("config", {})
        if mutate is not None:
            mutate(config)
        now = oci.rfc3339(time.time())
        history: dict[str, Any] = {"created": now, "created_by": created_by}
        if layer is None:
            history["empty_layer"] = True
        config["created"] = now
        config["history"] = [*(config.get("history") or []), history]
        layers = [*stage.layers, *([layer] if layer is not None else [])]
        config["rootfs"] = {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]}
        image = self.images.add_image(config, layers=layers)
        self.cache.put(key, image.id)
        stage.adopt(image)

    def _metadata(self, stage: Stage, instruction: Instruction, text: str) -> Iterator[bytes]:
        command = instruction.command
        if command not in metadata.HANDLERS and command != "MAINTAINER":
            raise InvalidArgument(f"unknown instruction: {command}")
        reset_cmd = command == "ENTRYPOINT" and not stage.cmd_set
        stage.cmd_set = stage.cmd_set or command == "CMD"
        flags = " ".join(f"--{k}={v}" for k, v in sorted(instruction.flags.items()))
        shown = f"{command} {flags} {text}" + (" (resets CMD)" if reset_cmd else "")
        key = cache_key(parent=stage.parent, instruction=shown)
        shell = stage.shell

        def mutate(config: dict[str, Any]) -> None:
            if command == "MAINTAINER":
                config["author"] = text
                return
            metadata.apply(config["config"], command, text, shell=shell, flags=instruction.flags)
            if reset_cmd:
                config["config"].pop("Cmd", None)

        def execute() -> Iterator[bytes]:
            self._commit(
                stage, key, created_by=f"/bin/sh -c #(nop)  {command} {text}", mutate=mutate
            )
            yield from ()

        yield from self._step(stage, key, execute)

    def _arg(self, stage: Stage, text: str) -> Iterator[bytes]:
        name, default = arg_declaration(text)
        if default is None and name in self.meta_args:
            default = self.meta_args[name]
        value = self._arg_value(name, default)
        if value is not None:
            stage.args[name] = value
        key = cache_key(parent=stage.parent, instruction=f"ARG {name}={value}")

        def execute() -> Iterator[bytes]:
            self._commit(stage, key, created_by=f"/bin/sh -c #(nop)  ARG {name}")
            yield from ()

        yield from self._step(stage, key, execute)

    def _run(self, stage: Stage, instruction: Instruction) -> Iterator[bytes]:
        argv = instruction.json_args() or [*stage.shell, instruction.rest]
        args = dict(stage.args)
        key = cache_key(parent=stage.parent, instruction=f"RUN {json.dumps(argv)}", build_args=args)
        prefix = (
            f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args.items()) + " " if args else ""
        )

        def execute() -> Iterator[bytes]:
            if stage.image is None or not stage.layers:
                raise InvalidArgument("RUN needs files to run in: this stage is FROM scratch")
            env = stage.env
            spec = RunSpec(
                image_id=stage.image.id,
                argv=argv,
                env=[f"{k}={v}" for k, v in args.items() if k not in env],
                workdir=stage.workdir,
                user=str(stage.container.get("User") or ""),
            )
            with build_container(self.containers, spec) as cid:
                yield f" ---> Running in {cid[:12]}\n".encode()
                yield from run_output(self.containers, cid, spec, cancelled=self.cancelled)
                upper = self.containers.writable_layer(cid)
                with self.images.lease() as lease:
                    layer = store_layer(lease, lambda out: upper_dir_tar(upper, out))
                    self._commit(stage, key, created_by=prefix + spec.shown, layer=layer)
                yield f"Removing intermediate container {cid[:12]}\n".encode()

        yield from self._step(stage, key, execute)

    def _copy(self, stage: Stage, instruction: Instruction, text: str) -> Iterator[bytes]:
        command = instruction.command
        items = words(text)
        if len(items) < 2:
            raise InvalidArgument(f"{command} requires at least two arguments")
        wanted, dest = items[:-1], items[-1]
        if command == "ADD" and any(sources.is_url(s) for s in wanted):
            raise InvalidArgument("ADD from a URL is not supported (no network access for builds)")
        with contextlib.ExitStack() as stack:
            root = self.context
            if "from" in instruction.flags:
                image = self._from_image(instruction.flags["from"])
                root = stack.enter_context(sources.merged_view(self.images, image, work=self.work))
            found = sources.resolve(root, wanted, command=command)
            if command == "ADD":
                found = sources.extract_archives(found, work=self.work)
            digest = sources_digest([Entry(name=s.name, source=s.host, owner=None) for s in found])
            flags = " ".join(f"--{k}={v}" for k, v in sorted(instruction.flags.items()))
            key = cache_key(
                parent=stage.parent, instruction=f"{command} {flags} {text}", sources=digest
            )
            created_by = f"/bin/sh -c #(nop) {command} {digest[7:19]} in {dest} "

            def execute() -> Iterator[bytes]:
                image = stage.image
                with sources.merged_view(self.images, image, work=self.work) as view:
                    owner = sources.chown(view, instruction.flags.get("chown", ""))
                    entries = sources.plan(
                        view, found, dest=dest, workdir=stage.workdir, owner=owner, command=command
                    )
                with self.images.lease() as lease:
                    layer = store_layer(lease, lambda out: copy_tar(entries, out))
                    self._commit(stage, key, created_by=created_by, layer=layer)
                yield from ()

            yield from self._step(stage, key, execute)

    def _from_image(self, reference: str) -> Image | None:
        named = self._stage_named(reference)
        if named is not None:
            return named.image
        try:
            return self.images.resolve(reference)
        except NotFound:
            raise InvalidArgument(
                f"COPY --from={reference}: no such stage or image (pulls are not available "
                "in builds)"
            ) from None

    def _workdir(self, stage: Stage, text: str) -> Iterator[bytes]:
        probe: dict[str, Any] = {"WorkingDir": stage.workdir}
        metadata.apply(probe, "WORKDIR", text)
        path = str(probe["WorkingDir"])
        key = cache_key(parent=stage.parent, instruction=f"WORKDIR {path}")

        def mutate(config: dict[str, Any]) -> None:
            config["config"]["WorkingDir"] = path

        def execute() -> Iterator[bytes]:
            with sources.merged_view(self.images, stage.image, work=self.work) as view:
                entries = sources.directories(view, path)
            if not entries:
                self._commit(
                    stage, key, created_by=f"/bin/sh -c #(nop) WORKDIR {path}", mutate=mutate
                )
            else:
                with self.images.lease() as lease:
                    layer = store_layer(lease, lambda out: copy_tar(entries, out))
                    created_by = f"/bin/sh -c #(nop) WORKDIR {path}"
                    self._commit(stage, key, created_by=created_by, mutate=mutate, layer=layer)
            yield from ()

        yield from self._step(stage, key, execute)

    def _build_labels(self, stage: Stage) -> None:
        labels: Mapping[str, str] = dict(self.options.labels)
        text = json.dumps(sorted(labels.items()))
        key = cache_key(parent=stage.parent, instruction=f"LABEL (--label) {text}")
        hit = None if self.options.no_cache else self.cache.get(key)
        if hit is not None:
            stage.adopt(self.images.resolve(hit))
            return

        def mutate(config: dict[str, Any]) -> None:
            inner = config["config"]
            inner["Labels"] = {**(inner.get("Labels") or {}), **labels}

        self._commit(stage, key, created_by=f"/bin/sh -c #(nop)  LABEL {text}", mutate=mutate)
