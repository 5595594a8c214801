"""`pyswarm build` against a real daemon: multi-stage builds, the cache, whiteouts,
.dockerignore, and bad input leaving nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MULTI_STAGE = """\
# a comment
FROM busybox AS base
RUN echo built-in-base > /built.txt

FROM busybox
ARG GREETING=hello
ENV APP_HOME=/app \\
    MODE=prod
WORKDIR $APP_HOME
COPY app.txt ./
COPY --from=base /built.txt /app/from-base.txt
RUN echo "$GREETING from $(pwd)" > greeting.txt && cat /proc/sys/kernel/random/uuid > /stamp
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/greeting.txt /app/app.txt /app/from-base.txt; echo $MODE; id -u"]
"""


def make_context(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def build(daemon, context: Path, *args: str):
    return daemon.cli("build", *args, str(context), timeout=180)


def blobs(daemon) -> set[str]:
    return set(os.listdir(daemon.data_root / "image" / "blobs" / "sha256"))


def stamp(daemon, image: str) -> str:
    res = daemon.cli("run", "--rm", "--entrypoint", "cat", image, "/stamp", check=True)
    return str(res.stdout).strip()


def test_multi_stage_build_and_cache(daemon, busybox, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": MULTI_STAGE, "app.txt": "app v1\n"})
    res = build(daemon, ctx, "-t", "app:1", "--build-arg", "GREETING=hi")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Step 1/12 : FROM busybox AS base" in res.stdout
    assert " ---> Running in " in res.stdout
    assert "Successfully tagged app:1" in res.stdout
    built = res.stdout.split("Successfully built ")[1].split()[0]

    out = daemon.cli("run", "--rm", "app:1", check=True).stdout.splitlines()
    assert out == ["hi from /app", "app v1", "built-in-base", "prod", "1000"]
    first = stamp(daemon, "app:1")

    again = build(daemon, ctx, "-t", "app:1", "--build-arg", "GREETING=hi")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" ---> Using cache") == 10  # every step but the two FROMs
    assert "Running in" not in again.stdout
    assert f"Successfully built {built}" in again.stdout
    assert stamp(daemon, "app:1") == first

    (ctx / "app.txt").write_text("app v2\n")
    changed = build(daemon, ctx, "-t", "app:1", "--build-arg", "GREETING=hi")
    assert changed.returncode == 0, changed.stderr
    before, after = changed.stdout.split("COPY app.txt ./", 1)
    assert before.count("Using cache") == 4  # RUN of base, ARG, ENV, WORKDIR
    assert "Using cache" not in after.split("RUN echo")[1]
    assert "app v2" in daemon.cli("run", "--rm", "app:1", check=True).stdout
    assert stamp(daemon, "app:1") != first


def test_deletions_become_whiteouts(daemon, busybox, tmp_path):
    dockerfile = """\
FROM busybox
RUN mkdir /d && touch /d/a /d/b
RUN rm /bin/vi && rm -rf /d && mkdir /d && touch /d/c
"""
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    res = build(daemon, ctx, "-t", "slim")
    assert res.returncode == 0, res.stdout + res.stderr
    gone = daemon.cli("run", "--rm", "slim", "sh", "-c", "test -e /bin/vi; echo $?; ls /d")
    assert gone.stdout.split() == ["1", "c"]
    fresh = build(daemon, ctx, "--no-cache", "-t", "slim")
    assert fresh.returncode == 0 and "Using cache" not in fresh.stdout
    assert fresh.stdout.count("Running in") == 2


def test_failing_run_leaves_nothing(daemon, busybox, tmp_path):
    ctx = make_context(
        tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo before-fail && false\n"}
    )
    images_before = daemon.cli("images", "-q", "--no-trunc", check=True).stdout
    blobs_before = blobs(daemon)
    res = build(daemon, ctx, "-t", "broken")
    assert res.returncode == 1
    assert "before-fail" in res.stdout
    assert (
        "The command '/bin/sh -c echo before-fail && false' returned a non-zero code: 1"
        in res.stderr
    )
    assert daemon.cli("ps", "-a", "-q").stdout == ""
    assert daemon.cli("images", "-q", "--no-trunc").stdout == images_before
    assert blobs(daemon) == blobs_before
    assert os.listdir(daemon.data_root / "tmp") == []


def test_dockerignore_and_quiet(daemon, busybox, tmp_path):
    ctx = make_context(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
            ".dockerignore": "secret.txt\n**/*.log\n!keep.log\n",
            "secret.txt": "s3cret",
            "logs/a.log": "x",
            "keep.log": "kept",
            "src/main.txt": "main",
        },
    )
    res = build(daemon, ctx, "-q", "-t", "ctx")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("sha256:") and len(res.stdout.split()) == 1
    listing = daemon.cli("run", "--rm", "ctx", "find", "/ctx", check=True).stdout.split()
    assert "/ctx/keep.log" in listing and "/ctx/src/main.txt" in listing
    assert "/ctx/secret.txt" not in listing and "/ctx/logs/a.log" not in listing


def test_add_archive_and_chown(daemon, busybox, tmp_path):
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/readme")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    ctx = make_context(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nADD pkg.tar.gz /opt/\nCOPY --chown=nobody f /f\n",
            "pkg.tar.gz": data.getvalue(),
            "f": "file",
        },
    )
    res = build(daemon, ctx, "-t", "added")
    assert res.returncode == 0, res.stdout + res.stderr
    out = daemon.cli(
        "run", "--rm", "added", "sh", "-c", "cat /opt/pkg/readme; echo; stat -c %U /f", check=True
    )
    assert out.stdout.split() == ["hello", "nobody"]


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM busybox\nFOO bar\n", "unknown instruction: FOO"),
        ("RUN true\n", "Dockerfile must begin with FROM"),
        ("FROM busybox\nCOPY ../x /x\n", "forbidden path outside the build context: ../x"),
        ("FROM busybox\nCOPY nope /x\n", "file not found in build context"),
        ("FROM nosuchimage\n", "pull access denied for nosuchimage"),
        ("FROM busybox\nADD http://example.com/x /x\n", "ADD from a URL is not supported"),
        ("FROM busybox\nONBUILD RUN true\n", "ONBUILD is not supported"),
        (b"FROM busybox\nLABEL a=\xff\xfe\n", "not valid UTF-8"),
    ],
)
def test_bad_input(daemon, busybox, tmp_path, dockerfile, message):
    blobs_before = blobs(daemon)
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    res = build(daemon, ctx)
    assert res.returncode == 1
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert daemon.cli("ps", "-a", "-q").stdout == ""
    assert blobs(daemon) == blobs_before


def test_target_stops_at_its_stage(daemon, busybox, tmp_path):
    dockerfile = "ARG B=busybox\nFROM $B AS a\nRUN touch /a\nFROM a AS b\nRUN false\n"
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    res = build(daemon, ctx, "--target", "A", "-t", "only-a")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Step 3/3 : RUN touch /a" in res.stdout and "false" not in res.stdout
    daemon.cli("run", "--rm", "only-a", "test", "-e", "/a", check=True)
    res = build(daemon, ctx, "--target", "c")
    assert res.returncode == 1
    assert "failed to reach build target c" in res.stderr


def test_scratch_exec_form_metadata_and_outside_dockerfile(daemon, busybox, tmp_path):
    import json

    dockerfile = """\
ARG BASE=busybox
FROM $BASE AS tools
RUN ["/bin/busybox", "touch", "/exec-form"]
FROM scratch
COPY --from=tools /bin/busybox /exec-form /
EXPOSE 8080
LABEL org.example.k="v 1"
HEALTHCHECK --interval=5s CMD ["/busybox", "true"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/busybox"]
CMD ["echo", "from scratch"]
"""
    ctx = make_context(tmp_path / "ctx", {"unrelated": "x"})
    outside = tmp_path / "elsewhere.Dockerfile"
    outside.write_text(dockerfile)
    res = build(daemon, ctx, "-f", str(outside), "-t", "tiny", "--label", "built-by=test")
    assert res.returncode == 0, res.stdout + res.stderr
    run = daemon.cli("run", "--rm", "tiny", check=True)
    assert run.stdout.strip() == "from scratch"
    listing = daemon.cli("run", "--rm", "tiny", "ls", "/", check=True).stdout.split()
    assert {"busybox", "exec-form"} <= set(listing)
    assert not [name for name in listing if "ockerfile" in name]
    doc = json.loads(daemon.cli("image", "inspect", "tiny", check=True).stdout)[0]
    config = doc["Config"]
    assert config["Labels"] == {"org.example.k": "v 1", "built-by": "test"}
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["StopSignal"] == "SIGINT"
    assert len(doc["RootFS"]["Layers"]) == 1


def test_client_gone_mid_run_removes_the_build_container(daemon, busybox, tmp_path):
    import subprocess

    from tests.daemons import PYSWARM, wait_for

    ctx = make_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo go; sleep 60\n"})
    client = subprocess.Popen(
        [PYSWARM, "-H", daemon.host, "build", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert client.stdout is not None
        for line in client.stdout:
            if line.strip() == b"go":
                break
        assert daemon.cli("ps", "-q").stdout.strip()  # the RUN container is running
    finally:
        client.kill()
        client.wait(timeout=10)
        if client.stdout is not None:
            client.stdout.close()
    wait_for(
        lambda: daemon.cli("ps", "-a", "-q").stdout == "",
        timeout=20,
        what="the build container to be removed",
        interval=0.1,
    )
    wait_for(
        lambda: os.listdir(daemon.data_root / "tmp") == [],
        timeout=10,
        what="the build's work dir to be removed",
        interval=0.1,
    )


def test_images_hides_intermediate_step_images(daemon, busybox, tmp_path):
    ctx = make_context(
        tmp_path / "ctx",
        {"Dockerfile": 'FROM busybox\nENV A=1\nRUN touch /x\nCMD ["true"]\n'},
    )
    assert build(daemon, ctx, "-t", "small:1").returncode == 0
    listed = daemon.cli("images", check=True).stdout.splitlines()[1:]
    assert sorted(line.split()[0] for line in listed) == ["busybox", "small"]
    everything = daemon.cli("images", "-a", check=True).stdout.splitlines()[1:]
    assert sum(line.startswith("<none>") for line in everything) == 2  # after ENV, after RUN
