import os

import pytest

from agent.containers import rootfs
from api.errors import CommandNotExecutable, CommandNotFound, InvalidArgument

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "bin").mkdir(parents=True)
    (r / "etc").mkdir()
    busybox = r / "bin" / "busybox"
    busybox.write_text("#!/bin/true\n")
    busybox.chmod(0o755)
    (r / "bin" / "sh").symlink_to("busybox")
    (r / "bin" / "abs").symlink_to("/bin/busybox")
    (r / "bin" / "escape").symlink_to("../../../../etc/passwd")
    (r / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (r / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\n")
    (r / "etc" / "notexec").write_text("x")
    return r


def test_lookup_follows_symlinks_inside_the_root_only(root):
    assert rootfs.resolve_in_root(root, "/bin/abs") == root / "bin" / "busybox"
    # ../.. cannot climb above the container root: lands on the image's /etc/passwd.
    assert rootfs.resolve_in_root(root, "/bin/escape") == root / "etc" / "passwd"


def test_symlink_loop_is_an_error(root):
    (root / "loop").symlink_to("loop")
    with pytest.raises(InvalidArgument):
        rootfs.resolve_in_root(root, "/loop")


def test_find_executable_in_path(root):
    assert rootfs.find_executable(root, "sh", path_env="/usr/bin:/bin", cwd="/") == "/bin/sh"


def test_missing_command_is_127(root):
    with pytest.raises(CommandNotFound) as err:
        rootfs.find_executable(root, "nope", path_env="/bin", cwd="/")
    assert err.value.exit_code == 127
    with pytest.raises(CommandNotFound):
        rootfs.find_executable(root, "/bin/nope", path_env="/bin", cwd="/")


def test_not_executable_is_126(root):
    with pytest.raises(CommandNotExecutable) as err:
        rootfs.find_executable(root, "/etc/notexec", path_env="/bin", cwd="/")
    assert err.value.exit_code == 126
    with pytest.raises(CommandNotExecutable):
        rootfs.find_executable(root, "/etc", path_env="/bin", cwd="/")


def test_resolve_user_by_name_uid_and_group(root):
    app = rootfs.resolve_user(root, "app")
    assert (app.uid, app.gid, app.additional_gids) == (1000, 1000, (10,))
    assert rootfs.resolve_user(root, "1000:10").gid == 10
    assert rootfs.resolve_user(root, "4242").uid == 4242
    with pytest.raises(InvalidArgument, match="unable to find user ghost"):
        rootfs.resolve_user(root, "ghost")
    with pytest.raises(InvalidArgument, match="unable to find group"):
        rootfs.resolve_user(root, "app:ghosts")


def test_overlay_mount_and_unmount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    lower, upper, work, target = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, target):
        d.mkdir()
    (lower / "f").write_text("from image")
    rootfs.mount_overlay(lowers=[lower], upper=upper, work=work, target=target)
    try:
        assert rootfs.is_mountpoint(target)
        (target / "g").write_text("written")
        assert (upper / "g").read_text() == "written"
        assert not (lower / "g").exists()
    finally:
        rootfs.unmount(target)
    assert not rootfs.is_mountpoint(target)
    rootfs.unmount(target)  # idempotent
