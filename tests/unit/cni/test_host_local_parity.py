"""Parity with the reference host-local (containernetworking-plugins): results and files.

Both plugins run with the same configuration in separate temp dataDirs (the
reference needs no root) and must answer the same and leave the same files;
and each must honour the leases the other wrote in a shared dataDir.
"""
import os
import stat

import pytest

from cnirun import disk_state, host_local_conf, run_plugin

CASES = {
    "v4": dict(ranges=[[{"subnet": "10.10.0.0/24"}]], routes=[{"dst": "0.0.0.0/0"}]),
    "v6": dict(ranges=[[{"subnet": "fd00:10::/120"}]], routes=[{"dst": "::/0", "gw": "fd00:10::1"}]),
    "dual": dict(ranges=[[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd00:10::/64"}]],
                 routes=[{"dst": "10.2.3.1/24", "gw": "10.10.0.9"}]),
    "legacy": dict(subnet="10.20.0.0/16", rangeStart="10.20.1.10", rangeEnd="10.20.1.12",
                   gateway="10.20.0.254"),
    "multi-range": dict(ranges=[[{"subnet": "10.30.0.0/30"}, {"subnet": "10.30.1.0/30"}]]),
}


def modes(data_dir):
    d = os.path.join(data_dir, "net1")
    return {n: stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for n in os.listdir(d)}


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_results_and_same_files(ours, reference, tmp_path, case, version):
    dirs = {"ours": tmp_path / "ours", "ref": tmp_path / "ref"}
    plugins = {"ours": ours, "ref": reference}
    answers = {k: [] for k in plugins}
    for who, binary in plugins.items():
        conf = host_local_conf(dirs[who], version, **CASES[case])
        for cid in ("a", "b", "c"):
            answers[who].append(run_plugin(binary, "ADD", conf, container_id=cid))
        answers[who].append(run_plugin(binary, "DEL", conf, container_id="b"))
        answers[who].append(run_plugin(binary, "ADD", conf, container_id="d"))
    for ours_run, ref_run in zip(answers["ours"], answers["ref"]):
        assert ours_run.rc == ref_run.rc, (ours_run, ref_run)
        if ref_run.rc == 0:
            assert ours_run.json == ref_run.json
        else:  # the same words; codes are compared in test_exhaustion_message_...
            assert ours_run.json["msg"] == ref_run.json["msg"]
    assert disk_state(dirs["ours"]) == disk_state(dirs["ref"])
    assert modes(dirs["ours"]) == modes(dirs["ref"])


def test_exhaustion_message_matches_the_reference(ours, reference, tmp_path):
    msgs = {}
    for who, binary in (("ours", ours), ("ref", reference)):
        conf = host_local_conf(tmp_path / who, subnet="10.0.0.0/30")
        assert run_plugin(binary, "ADD", conf, container_id="a").rc == 0
        run = run_plugin(binary, "ADD", conf, container_id="b")
        assert run.rc == 1
        msgs[who] = run.json["msg"]
    # Same words; the codes differ on purpose (reference 999, ours 11: retry later).
    assert msgs["ours"] == msgs["ref"]


def test_ours_honours_reference_leases_and_releases_them(ours, reference, tmp_path):
    conf = host_local_conf(tmp_path, ranges=[[{"subnet": "10.0.0.0/29"}], [{"subnet": "fd00::/125"}]])
    for cid in ("r1", "r2"):
        assert run_plugin(reference, "ADD", conf, container_id=cid).rc == 0
    mine = run_plugin(ours, "ADD", conf, container_id="o1")
    assert [ip["address"] for ip in mine.json["ips"]] == ["10.0.0.4/29", "fd00::4/125"], mine
    assert run_plugin(ours, "DEL", conf, container_id="r1").rc == 0
    state = disk_state(tmp_path)
    assert "10.0.0.2" not in state and "fd00::2" not in state
    assert state["10.0.0.3"] == b"r2\r\neth0" and state["10.0.0.4"] == b"o1\r\neth0"
    # ...and the reference honours ours: it continues the same round-robin.
    ref = run_plugin(reference, "ADD", conf, container_id="r3")
    assert [ip["address"] for ip in ref.json["ips"]] == ["10.0.0.5/29", "fd00::5/125"], ref
    assert run_plugin(reference, "DEL", conf, container_id="o1").rc == 0
    assert "10.0.0.4" not in disk_state(tmp_path)


def test_ours_refuses_an_address_the_reference_leased(ours, reference, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    assert run_plugin(reference, "ADD", conf, container_id="r1", args="IP=10.0.0.77").rc == 0
    run = run_plugin(ours, "ADD", conf, container_id="o1", args="IP=10.0.0.77")
    assert run.rc == 1 and "10.0.0.77 is not available" in run.json["msg"], run
    assert disk_state(tmp_path)["10.0.0.77"] == b"r1\r\neth0"
