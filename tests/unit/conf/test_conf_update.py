"""update: the daemon's start-up edit of an existing configuration, pure and on files."""
from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import given, strategies as st

from conf.errors import ConfError
from conf.update import update_conflist
from conf.validate import validate_doc
from conf_helpers import INPUTS, check_golden, fake_host

V4, V6 = "10.244.1.0/24", "fd00:10:244:1::/64"


def load(name: str) -> dict:
    return json.loads((INPUTS / name).read_text())


CASES = {
    # golden -> (input, flags)
    "update-kube-router-example.conflist": (
        "kube-router-example.conflist", ["--pod-cidr", V4, "--pod-cidr", V6, "--mtu", "1450"]),
    "update-ipv4-add-ipv6.conflist": ("ipv4-with-routes.conflist",
                                      ["--pod-cidr", f"{V4},{V6}", "--no-auto-mtu"]),
    "update-legacy-subnet.conf.conflist": ("legacy-subnet.conf",
                                           ["--pod-cidr", "10.244.5.0/24"]),
    "update-legacy-to-conflist.conflist": (
        "legacy-subnet.conf", ["--pod-cidr", "10.244.5.0/24", "--to-conflist", "--mtu", "9000"]),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_update_matches_golden(run_cli, tmp_path, golden):
    source, flags = CASES[golden]
    path = tmp_path / source
    path.write_text((INPUTS / source).read_text())
    result = run_cli(["update", path, *flags])
    assert result.exit_code == 0, result.stderr
    written = tmp_path / result.stdout.split()[1].rsplit("/", 1)[-1]
    check_golden(golden, written.read_text())
    assert validate_doc(json.loads(written.read_text())) == []


def test_update_keeps_unknown_fields_and_key_order():
    doc = load("legacy-subnet.conf")
    new = update_conflist(doc, [V6], mtu=1400)
    assert list(new) == list(doc) + ["mtu"]
    assert new["x-site"] == {"rack": 7}
    assert list(new["ipam"]) == ["type", "ranges", "dataDir"]
    assert new["ipam"]["ranges"] == [
        [{"subnet": "10.244.5.0/24", "rangeStart": "10.244.5.10", "gateway": "10.244.5.1"}],
        [{"subnet": V6}]]


def test_update_is_pure_and_idempotent():
    doc = load("ipv4-with-routes.conflist")
    before = copy.deepcopy(doc)
    once = update_conflist(doc, [V4, V6], mtu=1450)
    assert doc == before
    assert update_conflist(once, [V4, V6], mtu=1450) == once
    assert once["plugins"][0]["ipam"]["routes"][-1] == {"dst": "::/0"}
    assert once["plugins"][0]["ipam"]["vendorTuning"] == "keep-me"


def test_existing_range_is_not_duplicated():
    doc = load("ipv4-with-routes.conflist")
    assert update_conflist(doc, [V4]) == doc


def test_no_bridge_plugin_is_an_error():
    with pytest.raises(ConfError, match="no bridge plugin"):
        update_conflist({"cniVersion": "1.0.0", "name": "n",
                         "plugins": [{"type": "portmap"}]}, [V4])


def test_to_conflist_leaves_old_file_unless_asked(run_cli, tmp_path):
    old = tmp_path / "10-kuberouter.conf"
    old.write_text((INPUTS / "legacy-subnet.conf").read_text())
    result = run_cli(["update", old, "--pod-cidr", "10.244.5.0/24", "--to-conflist"])
    assert result.exit_code == 0
    assert old.read_text() == (INPUTS / "legacy-subnet.conf").read_text()
    assert (tmp_path / "10-kuberouter.conflist").exists()
    assert "sorts before" in result.stderr
    result = run_cli(["update", old, "--pod-cidr", "10.244.5.0/24", "--to-conflist",
                      "--remove-old"])
    assert result.exit_code == 0 and "unchanged" in result.stdout
    assert not old.exists()


def test_unchanged_file_keeps_mtime_and_formatting(run_cli, tmp_path):
    path = tmp_path / "k.conflist"
    path.write_text((INPUTS / "ipv4-with-routes.conflist").read_text())
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    result = run_cli(["update", path, "--pod-cidr", V4, "--mtu", "1500"])
    assert result.exit_code == 0 and "unchanged" in result.stdout
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert path.read_text() == (INPUTS / "ipv4-with-routes.conflist").read_text()


def test_auto_mtu_is_applied(run_cli, tmp_path):
    path = tmp_path / "k.conflist"
    path.write_text((INPUTS / "kube-router-example.conflist").read_text())
    assert run_cli(["update", path, "--pod-cidr", V4], host=fake_host(mtu=8950)).exit_code == 0
    assert json.loads(path.read_text())["plugins"][0]["mtu"] == 8950


BAD = {
    "malformed": ('{"plugins": [', ["--pod-cidr", V4], 2, "malformed JSON"),
    "not an object": ("[]", ["--pod-cidr", V4], 2, "must be a JSON object"),
    "overlap with existing": ((INPUTS / "ipv4-with-routes.conflist").read_text(),
                              ["--pod-cidr", "10.244.0.0/16"], 1, "overlaps"),
    "bad cidr": ((INPUTS / "ipv4-with-routes.conflist").read_text(),
                 ["--pod-cidr", "10.244.0.0/33"], 1, "not a valid CIDR"),
    "no bridge": ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "portmap"}]}',
                  ["--pod-cidr", V4], 1, "no bridge plugin"),
    "bad existing ipam": ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge",'
                          ' "ipam": {"type": "host-local", "subnet": "x"}}]}',
                          ["--pod-cidr", V4], 1, "plugins[0].ipam.ranges[0][0].subnet"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_leaves_file_untouched(run_cli, tmp_path, case):
    text, flags, code, words = BAD[case]
    path = tmp_path / "k.conflist"
    path.write_text(text)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    result = run_cli(["update", path, *flags])
    assert result.exit_code == code
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert path.read_text() == text and path.stat().st_mtime_ns == 1_000_000_000
    assert os.listdir(tmp_path) == ["k.conflist"]


def test_missing_file_is_unusable(run_cli, tmp_path):
    result = run_cli(["update", tmp_path / "nope", "--pod-cidr", V4])
    assert result.exit_code == 2 and "no such file" in result.stderr


octet = st.integers(0, 255)
v4_nets = st.builds(lambda a, b, p: f"10.{a}.{b}.0/{p}", octet, octet, st.integers(16, 24))


@given(existing=st.lists(st.builds(lambda a: f"172.16.{a}.0/24", octet), max_size=3,
                         unique=True),
       added=st.lists(v4_nets, max_size=2), mtu=st.none() | st.integers(68, 9000))
def test_update_converges_in_one_pass(existing, added, mtu):
    import ipaddress
    added = [str(ipaddress.ip_network(a, strict=False)) for a in added]
    doc = {"cniVersion": "1.0.0", "name": "k", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local",
                                    "ranges": [[{"subnet": e}] for e in existing]}}]}
    if not existing:
        del doc["plugins"][0]["ipam"]["ranges"]
    once = update_conflist(doc, added, mtu)
    assert update_conflist(once, added, mtu) == once
    subnets = [r[0]["subnet"] for r in once["plugins"][0]["ipam"]["ranges"]]
    assert set(existing) | set(added) == set(subnets)
    assert subnets[:len(existing)] == existing
