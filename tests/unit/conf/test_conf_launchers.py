"""install: launcher scripts, loopback copy, config; the CLI entry point."""
from __future__ import annotations

import importlib.metadata
import os
import stat
import subprocess
import sys

import pytest

from conf import defaults
from conf.errors import ConfError
from conf.install import build_launcher, project_paths


def test_launchers_match_the_console_scripts():
    scripts = {ep.name: ep.value for ep in
               importlib.metadata.distribution("kube-router").entry_points
               if ep.group == "console_scripts"}
    for name, (module, func) in defaults.LAUNCHERS.items():
        assert scripts[name] == f"{module}:{func}"


def test_launcher_text():
    text = build_launcher("cni.bridge.plugin", "main", "/opt/py/bin/python3", ["/srv/kr"])
    lines = text.splitlines()
    assert lines[0] == "#!/opt/py/bin/python3 -IS"
    assert "sys.path.extend(['/srv/kr'])" in lines
    assert lines[-2:] == ["from cni.bridge.plugin import main", "sys.exit(main())"]


def test_launcher_refuses_unusable_interpreter_paths():
    with pytest.raises(ConfError, match="#! line"):
        build_launcher("cni.bridge.plugin", "main", "/a b/python3", [])
    with pytest.raises(ConfError, match="#! line"):
        build_launcher("cni.bridge.plugin", "main", "/" + "x" * 260, [])


def test_project_paths_import_cni_without_site():
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          f"import sys; sys.path.extend({project_paths()!r}); import cni, site; "
                          "print(cni.__file__)"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(os.path.join("cni", "__init__.py"))


def test_install_into_root(run_cli, tmp_path):
    ref = tmp_path / "usr/lib/cni"
    ref.mkdir(parents=True)
    (ref / "loopback").write_bytes(b"\x7fELF fake loopback")
    result = run_cli(["install", "--root", tmp_path, "--pod-cidr", "10.1.0.0/24"])
    assert result.exit_code == 0, result.stderr
    bin_dir = tmp_path / "opt/cni/bin"
    assert sorted(os.listdir(bin_dir)) == sorted([*defaults.LAUNCHERS, "loopback"])
    for name in defaults.LAUNCHERS:
        assert stat.S_IMODE((bin_dir / name).stat().st_mode) == 0o755
    assert (bin_dir / "loopback").read_bytes() == b"\x7fELF fake loopback"
    assert f"copied from {ref / 'loopback'}" in result.stdout
    assert (tmp_path / "etc/cni/net.d/10-kuberouter.conflist").exists()
    again = run_cli(["install", "--root", tmp_path, "--pod-cidr", "10.1.0.0/24"])
    assert again.stdout.count("unchanged") == 5


def test_install_without_reference_warns(run_cli, tmp_path):
    result = run_cli(["install", "--root", tmp_path, "--no-config", "--plugins", "reference"])
    assert result.exit_code == 0
    for name in ("loopback", "bridge", "host-local", "portmap"):
        assert f"no {name} plugin" in result.stderr
    assert not (tmp_path / "etc").exists()


def test_main_returns_exit_codes(tmp_path, capsys):
    from conf.cli import main
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["generate", "--dry-run", "--pod-cidr", "10.9.0.0/24", "--mtu", "1500"]) == 0
    assert '"subnet": "10.9.0.0/24"' in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
