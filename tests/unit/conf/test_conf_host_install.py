"""install --lib-dir (host mode): the plugins copied for the node's own interpreter,
launchers holding the node's paths, atomic and idempotent, older copies removed."""
from __future__ import annotations

import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

from conf import defaults
from conf.errors import ConfError
from conf.install import (build_library_files, build_package_files, check_host_python,
                          cleanup_stale_libraries, ensure_host_plugins, ensure_library,
                          library_name, package_dir, read_library,
                          resolve_under_root)

LIB = "/opt/kube-router/lib"
HOST_ARGS = ["--lib-dir", LIB, "--python", "/usr/bin/python3", "--pod-cidr", "10.1.0.0/24",
             "--mtu", "1500"]


def fake_interpreter(root, name="python3.11", link="python3"):
    """A node's /usr/bin as Debian lays it out: python3 -> python3.11 (never run)."""
    usr_bin = root / "usr/bin"
    usr_bin.mkdir(parents=True, exist_ok=True)
    exe = usr_bin / name
    exe.write_bytes(b"\x7fELF not run")
    exe.chmod(0o755)
    if link:
        (usr_bin / link).symlink_to(name)
    return exe


@pytest.fixture
def node_root(tmp_path):
    root = tmp_path / "node"
    fake_interpreter(root)
    return root


def install(run_cli, root, *extra):
    return run_cli(["install", "--root", root, *HOST_ARGS, *extra])


def library_dirs(root):
    return sorted(p for p in os.listdir(root / LIB.lstrip("/")))


def snapshot(root):
    """Every path under root with its inode and mtime: any write shows up."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_launchers_hold_the_nodes_paths_only(run_cli, node_root):
    result = install(run_cli, node_root)
    assert result.exit_code == 0, result.stderr
    [name] = library_dirs(node_root)
    assert re.fullmatch(r"cni-[0-9a-f]{16}", name)
    for launcher, (module, func) in defaults.LAUNCHERS.items():
        text = (node_root / "opt/cni/bin" / launcher).read_text()
        assert text.splitlines()[0] == "#!/usr/bin/python3 -IS"
        assert f"sys.path.extend(['{LIB}/{name}'])" in text
        assert f"from {module} import {func}" in text
        assert str(node_root) not in text
    assert f"installed {node_root}/opt/kube-router/lib/{name}" in result.stdout


def test_the_copy_is_the_packages_python_files_only(run_cli, node_root):
    assert install(run_cli, node_root).exit_code == 0
    [name] = library_dirs(node_root)
    copy = node_root / LIB.lstrip("/") / name
    on_disk = {}
    for dirpath, dirnames, filenames in os.walk(copy):
        assert "__pycache__" not in dirnames
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o755
        for f in filenames:
            path = os.path.join(dirpath, f)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
            on_disk[os.path.relpath(path, copy)] = pathlib.Path(path).read_bytes()
    source = build_library_files()
    assert on_disk == source
    assert "cni/bridge/plugin.py" in source and "cni/host_local/plugin.py" in source
    assert "lowlevel/xtables.py" in source        # what the plugins import besides cni
    assert name == library_name(source)


def test_the_copy_imports_with_nothing_but_itself(run_cli, node_root):
    """The standard-library-only promise the host mode rests on: every module of the
    copy imports under -I -S with only the copy on sys.path."""
    assert install(run_cli, node_root).exit_code == 0
    [name] = library_dirs(node_root)
    copy = str(node_root / LIB.lstrip("/") / name)
    script = ("import sys, pkgutil, importlib; sys.path.append(sys.argv[1]); "
              "import cni, lowlevel; "
              "mods = [m.name for p in (cni, lowlevel) "
              "        for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]; "
              "[importlib.import_module(m) for m in mods]; "
              "assert all(sys.modules[m].__file__.startswith(sys.argv[1]) for m in mods); "
              "print(len(mods))")
    base = getattr(sys, "_base_executable", sys.executable)
    out = subprocess.run([base, "-I", "-S", "-B", "-c", script, copy], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # every file but the two top __init__.py is one module or subpackage
    assert int(out.stdout) == len(build_library_files()) - 2


def test_a_second_run_writes_nothing(run_cli, node_root):
    assert install(run_cli, node_root).exit_code == 0
    # The node's interpreter caches bytecode in the copy the first time a plugin runs.
    [name] = library_dirs(node_root)
    cache = node_root / LIB.lstrip("/") / name / "cni/bridge/__pycache__"
    cache.mkdir()
    (cache / "plugin.cpython-311.pyc").write_bytes(b"cached")
    before = snapshot(node_root)
    again = install(run_cli, node_root)
    assert again.exit_code == 0, again.stderr
    assert snapshot(node_root) == before
    assert "installed" not in again.stdout and "removed" not in again.stdout
    assert again.stdout.count("unchanged") == 1 + len(defaults.LAUNCHERS) + 1


def test_older_copies_and_leftover_builds_go_everything_else_stays(run_cli, node_root):
    lib = node_root / LIB.lstrip("/")
    old = lib / "cni-0123456789abcdef" / "cni"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    leftover = lib / ".cni-0123456789abcdef.x1y2.tmp"
    leftover.mkdir()
    (lib / "notes").write_text("the operator's")
    (lib / "cni-not-ours").mkdir()
    result = install(run_cli, node_root)
    assert result.exit_code == 0, result.stderr
    assert f"removed {old.parent} (an older copy of the plugins)" in result.stdout
    assert f"removed {leftover}" in result.stdout
    assert library_dirs(node_root) == sorted(
        ["cni-not-ours", "notes", library_name(build_library_files())])


def fake_package(path, version):
    path.mkdir(parents=True, exist_ok=True)
    (path / "__init__.py").write_text("")
    (path / "bridge.py").write_text(f"VERSION = {version!r}\n")
    if version == "1":
        (path / "gone.py").write_text("")
    elif (path / "gone.py").exists():
        (path / "gone.py").unlink()
    return path


def test_an_upgrade_switches_the_launchers_then_drops_the_old_copy(node_root, tmp_path):
    bin_dir, lib = "/opt/cni/bin", node_root / LIB.lstrip("/")
    src = tmp_path / "src" / "cni"
    first = ensure_host_plugins(str(node_root), bin_dir, "/usr/lib/cni", "ours",
                                "/usr/bin/python3", LIB,
                                sources={"cni": str(fake_package(src, "1"))})
    v1 = os.path.basename(first.installed[0].path)
    second = ensure_host_plugins(str(node_root), bin_dir, "/usr/lib/cni", "ours",
                                 "/usr/bin/python3", LIB,
                                 sources={"cni": str(fake_package(src, "2"))})
    v2 = os.path.basename(second.installed[0].path)
    assert v1 != v2 and second.installed[0].written
    assert second.removed == [str(lib / v1)]
    assert os.listdir(lib) == [v2]
    assert sorted(os.listdir(lib / v2 / "cni")) == ["__init__.py", "bridge.py"]
    assert (lib / v2 / "cni/bridge.py").read_text() == "VERSION = '2'\n"
    text = (node_root / "opt/cni/bin/kube-router-bridge").read_text()
    assert f"'{LIB}/{v2}'" in text and v1 not in text


def test_a_damaged_copy_is_rebuilt(tmp_path):
    files = {"cni/__init__.py": b"", "cni/bridge.py": b"x = 1\n"}
    first = ensure_library(str(tmp_path), files)
    assert first.written
    os.unlink(os.path.join(first.path, "cni", "bridge.py"))
    again = ensure_library(str(tmp_path), files)
    assert again.written and again.path == first.path
    assert read_library(first.path) == files
    assert os.listdir(tmp_path) == [os.path.basename(first.path)]
    assert not ensure_library(str(tmp_path), files).written


def test_cleanup_touches_only_our_names(tmp_path):
    for name in ("cni-aaaaaaaaaaaaaaaa", "cni-bbbbbbbbbbbbbbbb", "cni-short", "other",
                 ".cni-aaaaaaaaaaaaaaaa.k3j.tmp", ".hidden"):
        (tmp_path / name).mkdir()
    removed = cleanup_stale_libraries(str(tmp_path), keep="cni-bbbbbbbbbbbbbbbb")
    assert sorted(map(os.path.basename, removed)) == [
        ".cni-aaaaaaaaaaaaaaaa.k3j.tmp", "cni-aaaaaaaaaaaaaaaa"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "cni-bbbbbbbbbbbbbbbb", "cni-short",
                                            "other"]
    assert cleanup_stale_libraries(str(tmp_path / "missing"), keep="x") == []


# ---- the node's interpreter -----------------------------------------------------

def test_a_missing_interpreter_is_refused_before_anything_is_written(run_cli, tmp_path):
    result = run_cli(["install", "--root", tmp_path, *HOST_ARGS])
    assert result.exit_code != 0
    assert "--python /usr/bin/python3: no executable file there on the node" in result.stderr
    assert os.listdir(tmp_path) == []


def test_an_old_interpreter_is_refused(run_cli, tmp_path):
    fake_interpreter(tmp_path, "python3.9")
    result = run_cli(["install", "--root", tmp_path, *HOST_ARGS])
    assert result.exit_code != 0
    assert "/usr/bin/python3 -> /usr/bin/python3.9 is Python 3.9" in result.stderr
    assert not (tmp_path / "opt").exists()


def test_absolute_links_resolve_inside_the_root(tmp_path):
    """Debian's alternatives style: python3 -> /etc/alternatives/python3 -> /usr/bin/...;
    an absolute target means the node's /, not the installer's."""
    fake_interpreter(tmp_path, "python3.12", link=None)
    alternatives = tmp_path / "etc/alternatives"
    alternatives.mkdir(parents=True)
    (alternatives / "python3").symlink_to("/../usr/bin/../bin/python3.12")
    (tmp_path / "usr/bin/python3").symlink_to("/etc/alternatives/python3")
    assert resolve_under_root(str(tmp_path), "/usr/bin/python3") == "/usr/bin/python3.12"
    assert check_host_python(str(tmp_path), "/usr/bin/python3") == []


def test_a_link_loop_is_an_error(tmp_path):
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("/a")
    with pytest.raises(ConfError, match="too many levels of symbolic links"):
        check_host_python(str(tmp_path), "/a")


def test_an_unversioned_name_installs_with_a_warning(run_cli, tmp_path):
    exe = tmp_path / "opt/py/bin/python"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"")
    exe.chmod(0o755)
    result = run_cli(["install", "--root", tmp_path, "--lib-dir", LIB, "--python",
                      "/opt/py/bin/python", "--no-config"])
    assert result.exit_code == 0, result.stderr
    assert "cannot tell the version of /opt/py/bin/python from its name" in result.stderr
    assert (tmp_path / "opt/cni/bin/kube-router-bridge").read_text().startswith(
        "#!/opt/py/bin/python -IS\n")


@pytest.mark.parametrize("args, message", [
    (["--python", "/usr/bin/python3"], "--python needs --lib-dir"),
    (["--lib-dir", "opt/lib"], "must be an absolute path on the node"),
    (["--lib-dir", LIB, "--python", "python3"], "must be an absolute path on the node"),
])
def test_unusable_combinations_are_refused(run_cli, node_root, args, message):
    result = run_cli(["install", "--root", node_root, "--no-config", *args])
    assert result.exit_code != 0
    assert message in result.stderr
    assert not (node_root / "opt").exists()


def test_default_interpreter_in_host_mode_is_the_nodes_python3(run_cli, node_root):
    result = run_cli(["install", "--root", node_root, "--lib-dir", LIB, "--no-config"])
    assert result.exit_code == 0, result.stderr
    assert (node_root / "opt/cni/bin/kube-router-portmap").read_text().startswith(
        "#!/usr/bin/python3 -IS\n")
