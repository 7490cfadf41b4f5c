"""generate: golden output across flags, where it writes, atomic and idempotent writes."""
from __future__ import annotations

import json
import os
import stat

import pytest

from conf.validate import validate_doc
from conf_helpers import check_golden, fake_host

CASES = {
    # golden file -> (flags, host)
    "ipv4-ours-automtu.conflist": (["--pod-cidr", "10.244.1.0/24"], fake_host(mtu=1450)),
    "dualstack-ours.conflist": (
        ["--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:10:244:1::/64", "--mtu", "1500"],
        fake_host()),
    "dualstack-comma-reference.conflist": (
        ["--pod-cidr", "10.244.1.0/24,fd00:10:244:1::/64", "--plugins", "reference",
         "--mtu", "9000"], fake_host()),
    "ipv6-only-nodefaultroute.conflist": (["--pod-cidr", "fd00:10:244:7::/64"],
                                          fake_host(iface=None)),
    "options-off.conflist": (
        ["--pod-cidr", "10.32.0.0/16", "--no-hairpin", "--no-host-port", "--ip-masq",
         "--no-auto-mtu", "--cni-version", "0.3.1", "--network-name", "mynet",
         "--bridge-name", "br-pods", "--data-dir", "/run/cni-ipam"], fake_host()),
    "reference-cni-0.4.0.conflist": (
        ["--pod-cidr", "192.168.64.0/26", "--plugins", "reference", "--cni-version", "0.4.0",
         "--mtu", "1400"], fake_host()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_generate_matches_golden(run_cli, name):
    flags, host = CASES[name]
    result = run_cli(["generate", "--dry-run", *flags], host=host)
    assert result.exit_code == 0, result.stderr
    check_golden(name, result.stdout)
    assert validate_doc(json.loads(result.stdout)) == []


def test_defaults_are_kube_routers(run_cli):
    doc = json.loads(run_cli(["generate", "--dry-run", "--pod-cidr", "10.1.0.0/24"]).stdout)
    bridge, portmap = doc["plugins"]
    assert (doc["cniVersion"], doc["name"]) == ("1.0.0", "kubernetes")
    assert bridge["bridge"] == "kube-bridge" and bridge["hairpinMode"] is True
    assert bridge["isDefaultGateway"] is True and bridge["ipMasq"] is False
    assert bridge["mtu"] == 1450
    assert bridge["ipam"]["dataDir"] == "/var/lib/cni/networks"
    assert portmap == {"type": "kube-router-portmap", "capabilities": {"portMappings": True},
                       "snat": True}


def test_writes_default_path_under_root(run_cli, tmp_path):
    result = run_cli(["generate", "--root", tmp_path, "--pod-cidr", "10.1.0.0/24"])
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "etc/cni/net.d/10-kuberouter.conflist"
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "cniVersion": "1.0.0",\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == [path.name]


def test_output_from_env_and_flag_wins(run_cli, tmp_path):
    env_path, flag_path = tmp_path / "env.conflist", tmp_path / "flag.conflist"
    env = {"KUBE_ROUTER_CNI_CONF_FILE": str(env_path)}
    assert run_cli(["generate", "--pod-cidr", "10.1.0.0/24"], env=env).exit_code == 0
    assert env_path.exists()
    assert run_cli(["generate", "--pod-cidr", "10.1.0.0/24", "-o", flag_path],
                   env=env).exit_code == 0
    assert flag_path.exists()


def test_unchanged_config_is_not_rewritten(run_cli, tmp_path):
    path = tmp_path / "k.conflist"
    args = ["generate", "--pod-cidr", "10.1.0.0/24", "-o", path]
    assert run_cli(args).exit_code == 0
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    inode = path.stat().st_ino
    result = run_cli(args)
    assert result.exit_code == 0 and "unchanged" in result.stdout
    assert path.stat().st_mtime_ns == 1_000_000_000 and path.stat().st_ino == inode


def test_changed_config_replaces_the_file_by_rename(run_cli, tmp_path):
    path = tmp_path / "k.conflist"
    assert run_cli(["generate", "--pod-cidr", "10.1.0.0/24", "-o", path]).exit_code == 0
    inode = path.stat().st_ino
    with open(path) as reader:  # a runtime holding the old file keeps reading it whole
        assert run_cli(["generate", "--pod-cidr", "10.2.0.0/24", "-o", path]).exit_code == 0
        assert "10.1.0.0/24" in reader.read()
    assert path.stat().st_ino != inode
    assert "10.2.0.0/24" in path.read_text()
    assert sorted(os.listdir(tmp_path)) == ["k.conflist"]


BAD_INPUTS = {
    "bad CIDR": (["--pod-cidr", "10.1.0.300/24"], "not a valid CIDR"),
    "no prefix": (["--pod-cidr", "10.1.0.0"], "no prefix length"),
    "host bits": (["--pod-cidr", "10.1.0.1/24"], "host bits set"),
    "too small": (["--pod-cidr", "10.1.0.0/31"], "too small"),
    "overlap": (["--pod-cidr", "10.1.0.0/16", "--pod-cidr", "10.1.2.0/24"], "overlap"),
    "network name": (["--pod-cidr", "10.1.0.0/24", "--network-name", "a b"],
                     "not a valid network name"),
    "bridge name": (["--pod-cidr", "10.1.0.0/24", "--bridge-name", "b" * 16],
                    "plugins[0].bridge"),
    "no pod cidr source": ([], "no pod CIDR: pass --pod-cidr"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_the_file(run_cli, tmp_path, case):
    path = tmp_path / "k.conflist"
    path.write_text("operator's file\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    flags, expected = BAD_INPUTS[case]
    result = run_cli(["generate", "-o", path, *flags])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert result.stderr.startswith("kube-router-cni: error: ")
    assert path.read_text() == "operator's file\n"
    assert path.stat().st_mtime_ns == 1_000_000_000


def test_unwritable_directory_is_one_line(run_cli, tmp_path):
    blocker = tmp_path / "net.d"
    blocker.write_text("a file where the directory should be")
    result = run_cli(["generate", "--pod-cidr", "10.1.0.0/24", "-o", blocker / "k.conflist"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "is not a directory" in result.stderr


def test_bad_mtu_and_version_are_usage_errors(run_cli):
    assert run_cli(["generate", "--pod-cidr", "10.1.0.0/24", "--mtu", "20"]).exit_code == 2
    assert run_cli(["generate", "--pod-cidr", "10.1.0.0/24",
                    "--cni-version", "0.2.0"]).exit_code == 2
