"""The bridge plugin's ``vlan``: pods on one VLAN talk, pods on another VLAN of the same bridge do not.

Needs bridge VLAN filtering, which some kernels (this machine's) leave out.
"""
import os
import pathlib
import socket
import sys
import uuid

from krsim.cniruntime import Attachment, CniRuntime

BIN = str(pathlib.Path(sys.executable).parent)


def runtime(data_dir, vlan: int) -> CniRuntime:
    return CniRuntime({"cniVersion": "1.0.0", "name": f"vlan{vlan}", "plugins": [
        {"type": "kube-router-bridge", "bridge": "kbrv", "vlan": vlan,
         "ipam": {"type": "kube-router-host-local", "dataDir": str(data_dir),
                  "ranges": [[{"subnet": "10.77.0.0/24",
                               "rangeStart": f"10.77.0.{10 if vlan == 42 else 100}",
                               "rangeEnd": f"10.77.0.{99 if vlan == 42 else 199}"}]]}}]},
        [BIN])


def reachable(src, dst, ip: str) -> bool:
    server = dst.socket()
    server.bind((ip, 9000))
    server.listen()
    client = src.socket()
    client.settimeout(1.5)
    try:
        client.connect((ip, 9000))
        return True
    except OSError:
        return False
    finally:
        client.close()
        server.close()


def test_vlan_separates_pods_on_one_bridge(netns_factory, host_ns, tmp_path):
    pods = {name: netns_factory(name) for name in ("a", "b", "c")}
    vlans = {"a": 42, "b": 42, "c": 43}
    ips = {}
    atts = []
    for name, ns in pods.items():
        rt = runtime(tmp_path, vlans[name])
        rt.node_netns = host_ns.name
        att = Attachment(uuid.uuid4().hex, ns.path, "eth0")
        ips[name] = rt.add(att)["ips"][0]["address"].split("/")[0]
        atts.append((rt, att))
    port_vlans = host_ns.exec("bridge -j vlan show").stdout
    assert '"vlan":42' in port_vlans.replace(" ", "") and '"vlan":43' in port_vlans.replace(" ", "")
    assert reachable(pods["a"], pods["b"], ips["b"]), "same VLAN must reach"
    assert not reachable(pods["a"], pods["c"], ips["c"]), "other VLAN must not reach"
    for rt, att in atts:
        rt.delete(att)
    leases = [f for f in os.listdir(tmp_path / "vlan42")
              if f != "lock" and not f.startswith("last_reserved")]
    assert leases == []
