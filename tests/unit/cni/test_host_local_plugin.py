"""kube-router-host-local end to end: the console script, CNI_* env, a temp dataDir."""
import concurrent.futures

from cni import skel
from cnirun import disk_state, host_local_conf, run_plugin


def add(ours, conf, cid="c1", ifname="eth0", **kw):
    run = run_plugin(ours, "ADD", conf, container_id=cid, ifname=ifname, **kw)
    return run


def test_add_del_round_trip_and_idempotent_del(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24", routes=[{"dst": "0.0.0.0/0"}])
    run = add(ours, conf)
    assert run.rc == 0, run
    assert run.json == {"cniVersion": "1.0.0",
                        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
                        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
    assert disk_state(tmp_path)["10.0.0.2"] == b"c1\r\neth0"
    assert disk_state(tmp_path)["last_reserved_ip.0"] == b"10.0.0.2"
    for _ in range(2):
        gone = run_plugin(ours, "DEL", conf, container_id="c1", ifname="eth0", netns="")
        assert gone.rc == 0 and gone.stdout == b"", gone
    assert set(disk_state(tmp_path)) == {"lock", "last_reserved_ip.0"}


def test_round_robin_does_not_reuse_a_released_address(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/29")
    assert add(ours, conf, "a").json["ips"][0]["address"] == "10.0.0.2/29"
    assert run_plugin(ours, "DEL", conf, container_id="a").rc == 0
    assert add(ours, conf, "b").json["ips"][0]["address"] == "10.0.0.3/29"


def test_exhaustion_is_code_11_naming_the_range(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/30")
    assert add(ours, conf, "a").rc == 0
    run = add(ours, conf, "b")
    assert run.rc == 1 and run.json["code"] == skel.TRY_AGAIN_LATER, run
    assert "no IP addresses available in range set: 10.0.0.1-10.0.0.2" in run.json["msg"]


def test_dual_stack_rolls_back_the_first_family_when_the_second_fails(ours, tmp_path):
    conf = host_local_conf(tmp_path, ranges=[[{"subnet": "10.0.0.0/24"}],
                                             [{"subnet": "fd00::/126"}]])
    assert add(ours, conf, "a").rc == 0
    assert add(ours, conf, "b").rc == 0  # fd00::2 and fd00::3 are now gone
    run = add(ours, conf, "c")
    assert run.json["code"] == skel.TRY_AGAIN_LATER and "range 1" in run.json["msg"], run
    owners = set(disk_state(tmp_path).values())
    assert not any(v.startswith(b"c\r\n") for v in owners), "the failed ADD left a lease"


def test_requested_ips_from_cni_args_args_and_runtime_config(ours, tmp_path):
    conf = host_local_conf(tmp_path, ranges=[[{"subnet": "10.0.0.0/24"}],
                                             [{"subnet": "fd00::/120"}]])
    run = add(ours, conf, "a", args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.50,fd00::50")
    assert [ip["address"] for ip in run.json["ips"]] == ["10.0.0.50/24", "fd00::50/120"], run
    conf2 = dict(conf, args={"cni": {"ips": ["10.0.0.60"]}})
    assert add(ours, conf2, "b").json["ips"][0]["address"] == "10.0.0.60/24"
    conf3 = dict(conf, runtimeConfig={"ips": ["fd00::70/120"]})
    assert add(ours, conf3, "c").json["ips"][1]["address"] == "fd00::70/120"
    taken = add(ours, conf, "d", args="IP=10.0.0.50")
    assert taken.rc == 1 and "10.0.0.50 is not available" in taken.json["msg"], taken
    gateway = add(ours, conf, "e", args="IP=10.0.0.1")
    assert gateway.json["code"] == skel.INVALID_CONFIG and "gateway" in gateway.json["msg"]
    outside = add(ours, conf, "f", args="IP=192.168.0.1")
    assert outside.json["code"] == skel.INVALID_CONFIG and "192.168.0.1" in outside.json["msg"]


def test_ip_ranges_capability_and_resolv_conf(ours, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 10.96.0.10\nnameserver fd00::a\n"
                      "search svc.cluster.local cluster.local\noptions ndots:5\ndomain x.y\n")
    conf = host_local_conf(tmp_path / "d", ranges=[[{"subnet": "10.0.0.0/24"}]],
                           resolvConf=str(resolv))
    conf["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.5.0.0/24", "rangeStart": "10.5.0.100"}]]}
    run = add(ours, conf)
    assert run.json["ips"] == [{"address": "10.5.0.100/24", "gateway": "10.5.0.1"}], run
    assert run.json["dns"] == {"nameservers": ["10.96.0.10", "fd00::a"], "domain": "x.y",
                               "search": ["svc.cluster.local", "cluster.local"],
                               "options": ["ndots:5"]}
    conf["ipam"]["resolvConf"] = str(tmp_path / "missing")
    missing = add(ours, conf, "c2")
    assert missing.json["code"] == skel.IO_FAILURE and "resolvConf" in missing.json["msg"]


def test_result_in_0_3_1_and_duplicate_add_refused(ours, tmp_path):
    conf = host_local_conf(tmp_path, "0.3.1", subnet="10.0.0.0/24")
    run = add(ours, conf)
    assert run.json["cniVersion"] == "0.3.1" and run.json["ips"][0]["version"] == "4"
    again = add(ours, conf)
    assert again.rc == 1 and "duplicate allocation" in again.json["msg"], again
    assert sum(1 for k in disk_state(tmp_path) if k.startswith("10.")) == 1


def test_check_compares_prev_result_with_the_leases(ours, tmp_path):
    conf = host_local_conf(tmp_path, "1.0.0", subnet="10.0.0.0/24")
    result = add(ours, conf).json
    conf["prevResult"] = result
    assert run_plugin(ours, "CHECK", conf).rc == 0
    assert run_plugin(ours, "CHECK", conf, container_id="other").json["code"] == skel.INTERNAL
    conf["prevResult"] = dict(result, ips=[{"address": "10.0.0.99/24"}])
    bad = run_plugin(ours, "CHECK", conf)
    assert bad.rc == 1 and "10.0.0.99" in bad.json["msg"], bad


def test_gc_releases_only_invalid_attachments(ours, tmp_path):
    conf = host_local_conf(tmp_path, "1.1.0", subnet="10.0.0.0/24")
    for cid in ("keep", "drop"):
        assert add(ours, conf, cid).rc == 0
    assert add(ours, conf, "keep", ifname="net1").rc == 0
    (tmp_path / "net1" / "10.0.0.200").write_text("oldstyle")  # pre-0.7 lease, no ifname
    conf["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    gc = run_plugin(ours, "GC", conf, container_id=None, ifname=None, netns=None)
    assert gc.rc == 0 and gc.stdout == b"", gc
    state = disk_state(tmp_path)
    assert {k: v for k, v in state.items() if k[0].isdigit()} == {"10.0.0.2": b"keep\r\neth0"}


def test_gc_without_valid_attachments_is_code_7_and_releases_nothing(ours, tmp_path):
    conf = host_local_conf(tmp_path, "1.1.0", subnet="10.0.0.0/24")
    assert add(ours, conf, "keep").rc == 0
    gc = run_plugin(ours, "GC", conf, container_id=None, ifname=None, netns=None)
    assert gc.json["code"] == skel.INVALID_CONFIG and "valid-attachments" in gc.json["msg"]
    assert "10.0.0.2" in disk_state(tmp_path)


def test_status_reports_exhaustion_as_code_50(ours, tmp_path):
    conf = host_local_conf(tmp_path, "1.1.0", subnet="10.0.0.0/30")
    kw = dict(container_id=None, ifname=None, netns=None)
    assert run_plugin(ours, "STATUS", conf, **kw).rc == 0
    assert add(ours, conf).rc == 0
    status = run_plugin(ours, "STATUS", conf, **kw)
    assert status.json["code"] == skel.NOT_AVAILABLE and "10.0.0.1-10.0.0.2" in status.json["details"]


def test_64_concurrent_adds_get_distinct_addresses_then_64_dels_clean_up(ours, tmp_path):
    conf = host_local_conf(tmp_path, ranges=[[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]])
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        runs = list(pool.map(lambda i: add(ours, conf, f"pod{i}", timeout=120), range(64)))
    assert all(r.rc == 0 for r in runs), [r for r in runs if r.rc][:3]
    v4 = {r.json["ips"][0]["address"] for r in runs}
    v6 = {r.json["ips"][1]["address"] for r in runs}
    assert len(v4) == 64 and len(v6) == 64
    leases = {k: v for k, v in disk_state(tmp_path).items()
              if k != "lock" and not k.startswith("last_reserved_ip.")}
    assert len(leases) == 128 and set(leases.values()) == {
        f"pod{i}\r\neth0".encode() for i in range(64)}
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        dels = list(pool.map(lambda i: run_plugin(ours, "DEL", conf, container_id=f"pod{i}",
                                                  timeout=120), range(64)))
    assert all(r.rc == 0 for r in dels), [r for r in dels if r.rc][:3]
    assert set(disk_state(tmp_path)) == {"lock", "last_reserved_ip.0", "last_reserved_ip.1"}


def test_del_works_when_the_range_config_became_invalid(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    assert add(ours, conf).rc == 0
    conf["ipam"]["subnet"] = "not-a-subnet"
    assert run_plugin(ours, "DEL", conf).rc == 0
    assert set(disk_state(tmp_path)) == {"lock", "last_reserved_ip.0"}
