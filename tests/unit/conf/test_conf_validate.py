"""validate: the shipped schema, semantic checks, executables, exit codes."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess

import jsonschema
import pytest

from conf.schema import load_schema
from conf.validate import validate_doc
from conf_helpers import GOLDEN

KUBE_ROUTER_EXAMPLE = {
    "cniVersion": "0.3.0", "name": "mynet",
    "plugins": [{"name": "kubernetes", "type": "bridge", "bridge": "kube-bridge",
                 "isDefaultGateway": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "subnet": "10.244.3.0/24"}},
                {"type": "portmap", "capabilities": {"snat": True, "portMappings": True}}]}


def good() -> dict:
    return json.loads((GOLDEN / "dualstack-ours.conflist").read_text())


def paths(problems) -> list[str]:
    return [p.path for p in problems]


def test_schema_is_draft_2020_12_and_well_formed():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.conflist")))
def test_every_golden_is_valid(golden):
    assert validate_doc(json.loads((GOLDEN / golden).read_text())) == []


def test_kube_routers_example_and_unknown_fields_are_valid():
    doc = copy.deepcopy(KUBE_ROUTER_EXAMPLE)
    doc["x-vendor"] = {"any": "thing"}
    doc["plugins"][0]["futureField"] = [1, 2]
    doc["plugins"][0]["ipam"]["unknown"] = True
    assert validate_doc(doc) == []


def test_kube_routers_example_without_subnet_says_run_update():
    doc = copy.deepcopy(KUBE_ROUTER_EXAMPLE)
    del doc["plugins"][0]["ipam"]["subnet"]
    [problem] = validate_doc(doc)
    assert problem.path == "plugins[0].ipam" and "kube-router-cni update" in problem.message


def mutate(path_value_pairs):
    doc = good()
    for path, value in path_value_pairs:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


DELETE = object()
BRIDGE, IPAM, PORTMAP = ("plugins", 0), ("plugins", 0, "ipam"), ("plugins", 1)

BAD = {
    "bad subnet": ([(IPAM + ("ranges", 1, 0, "subnet"), "fd00::zz/64")],
                   "plugins[0].ipam.ranges[1][0].subnet", "not a valid CIDR"),
    "host bits": ([(IPAM + ("ranges", 0, 0, "subnet"), "10.244.1.9/24")],
                  "plugins[0].ipam.ranges[0][0].subnet", "host bits"),
    "overlap": ([(IPAM + ("ranges",), [[{"subnet": "10.0.0.0/8"}], [{"subnet": "10.9.0.0/16"}]])],
                "plugins[0].ipam.ranges[1][0].subnet", "overlaps 10.0.0.0/8"),
    "rangeStart outside": ([(IPAM + ("ranges", 0, 0, "rangeStart"), "10.244.2.10")],
                           "plugins[0].ipam.ranges[0][0].rangeStart", "outside subnet"),
    "rangeEnd wrong family": ([(IPAM + ("ranges", 0, 0, "rangeEnd"), "fd00::1")],
                              "plugins[0].ipam.ranges[0][0].rangeEnd", "outside subnet"),
    "gateway outside": ([(IPAM + ("ranges", 1, 0, "gateway"), "fd00:1::1")],
                        "plugins[0].ipam.ranges[1][0].gateway", "outside subnet"),
    "start after end": ([(IPAM + ("ranges", 0, 0, "rangeStart"), "10.244.1.200"),
                         (IPAM + ("ranges", 0, 0, "rangeEnd"), "10.244.1.100")],
                        "plugins[0].ipam.ranges[0][0].rangeStart", "after rangeEnd"),
    "mixed range set": ([(IPAM + ("ranges",), [[{"subnet": "10.1.0.0/24"},
                                                {"subnet": "fd00::/64"}]])],
                        "plugins[0].ipam.ranges[0][1].subnet", "mixes IPv4 and IPv6"),
    "legacy overlaps ranges": ([(IPAM + ("subnet",), "10.244.0.0/16")],
                               "plugins[0].ipam.ranges[0][0].subnet", "overlaps"),
    "bad route": ([(IPAM + ("routes",), [{"dst": "default"}])],
                  "plugins[0].ipam.routes[0].dst", "not a valid destination"),
    "bad route gw": ([(IPAM + ("routes",), [{"dst": "192.0.2.0/24", "gw": "10.1"}])],
                     "plugins[0].ipam.routes[0].gw", "not a valid IP"),
    "default route twice": ([(IPAM + ("routes",), [{"dst": "192.0.2.0/24"}, {"dst": "::/0"}])],
                            "plugins[0].ipam.routes[1].dst", "file exists"),
    "hairpin and promisc": ([(BRIDGE + ("promiscMode",), True)],
                            "plugins[0].promiscMode", "set promiscMode to false"),
    "mtu as string": ([(BRIDGE + ("mtu",), "1500")], "plugins[0].mtu", "wrong type"),
    "mtu too small": ([(BRIDGE + ("mtu",), 40)], "plugins[0].mtu", "68..65535"),
    "vlan": ([(BRIDGE + ("vlan",), 4095)], "plugins[0].vlan", "out of range"),
    "hairpin type": ([(BRIDGE + ("hairpinMode",), "yes")], "plugins[0].hairpinMode",
                     "wrong type"),
    "markMasqBit": ([(PORTMAP + ("markMasqBit",), 32)], "plugins[1].markMasqBit",
                    "out of range"),
    "mark and chain": ([(PORTMAP + ("markMasqBit",), 13),
                        (PORTMAP + ("externalSetMarkChain",), "KUBE-MARK-MASQ")],
                       "plugins[1]", "exclude each other"),
    "conditions": ([(PORTMAP + ("conditionsV4",), "-s 1.2.3.4")], "plugins[1].conditionsV4",
                   "wrong type"),
    "portMappings capability": ([(PORTMAP + ("capabilities",), {"portMappings": "on"})],
                                "plugins[1].capabilities.portMappings", "wrong type"),
    "no type": ([(PORTMAP + ("type",), DELETE)], "plugins[1]", "'type' is missing"),
    "empty ranges": ([(IPAM + ("ranges",), [])], "plugins[0].ipam.ranges", "empty"),
    "range without subnet": ([(IPAM + ("ranges",), [[{"rangeStart": "10.1.0.2"}]])],
                             "plugins[0].ipam.ranges[0][0]", "'subnet' is missing"),
    "cniVersion": ([(("cniVersion",), "0.2.0")], "cniVersion", "use one of"),
    "no plugins": ([(("plugins",), [])], "plugins", "empty"),
    "dataDir": ([(IPAM + ("dataDir",), "")], "plugins[0].ipam.dataDir", "length"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_path_and_fix(case):
    changes, path, words = BAD[case]
    problems = validate_doc(mutate(changes))
    assert path in paths(problems), problems
    assert any(words in p.message for p in problems if p.path == path), problems


def test_single_conf_is_checked_as_a_plugin():
    conf = {"cniVersion": "0.4.0", "name": "k", "type": "bridge", "hairpinMode": "x",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}}
    assert paths(validate_doc(conf)) == ["hairpinMode"]
    conf["hairpinMode"] = True
    assert paths(validate_doc(conf)) == ["ipam.gateway"]


def make_bin_dir(tmp_path, names):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return bin_dir


def test_missing_binaries_and_loopback_are_reported(tmp_path):
    bin_dir = make_bin_dir(tmp_path, ["kube-router-bridge", "kube-router-portmap"])
    (bin_dir / "kube-router-host-local").write_text("not executable")
    problems = validate_doc(good(), str(bin_dir))
    assert paths(problems) == ["plugins[0].ipam.type", "(bin dir)"]
    assert "kube-router-cni install" in problems[0].message
    assert "loopback" in problems[1].message


def test_present_binaries_pass(tmp_path):
    bin_dir = make_bin_dir(tmp_path, ["kube-router-bridge", "kube-router-host-local",
                                      "kube-router-portmap", "loopback"])
    assert validate_doc(good(), str(bin_dir)) == []


def test_cli_exit_codes(run_cli, tmp_path):
    conf = tmp_path / "k.conflist"
    conf.write_text(json.dumps(good()))
    bin_dir = make_bin_dir(tmp_path, ["kube-router-bridge", "kube-router-host-local",
                                      "kube-router-portmap", "loopback"])
    ok = run_cli(["validate", conf, "--cni-bin-dir", bin_dir])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    (bin_dir / "loopback").unlink()
    assert run_cli(["validate", conf, "--cni-bin-dir", bin_dir]).exit_code == 1
    assert run_cli(["validate", conf, "--no-check-binaries"]).exit_code == 0
    bad = mutate([(BRIDGE + ("promiscMode",), True)])
    conf.write_text(json.dumps(bad))
    result = run_cli(["validate", conf, "--no-check-binaries"])
    assert result.exit_code == 1
    assert result.stderr == f"{conf}: plugins[0].promiscMode: " \
        "hairpinMode and promiscMode cannot both be on (the bridge plugin refuses it): " \
        "set promiscMode to false\n"
    conf.write_text('{"cniVersion": "1.0.0", "plugins": [')
    malformed = run_cli(["validate", conf])
    assert malformed.exit_code == 2 and "malformed JSON at line 1" in malformed.stderr
    missing = run_cli(["validate", tmp_path / "nope.conflist"])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    conf.write_text("[1, 2]")
    assert run_cli(["validate", conf]).exit_code == 1


def test_validate_reads_env_file(run_cli, tmp_path):
    conf = tmp_path / "env.conflist"
    conf.write_text(json.dumps(good()))
    result = run_cli(["validate", "--no-check-binaries"],
                     env={"KUBE_ROUTER_CNI_CONF_FILE": str(conf)})
    assert result.exit_code == 0 and str(conf) in result.stdout


@pytest.mark.skipif(not os.access("/usr/lib/cni/host-local", os.X_OK),
                    reason="needs the reference host-local plugin (containernetworking-plugins)")
def test_reference_host_local_accepts_generated_ipam(tmp_path):
    """The real host-local parses our ranges/routes and allocates from both families."""
    doc = json.loads((GOLDEN / "dualstack-comma-reference.conflist").read_text())
    bridge = doc["plugins"][0]
    bridge["ipam"]["dataDir"] = str(tmp_path / "ipam")
    conf = dict(bridge, cniVersion=doc["cniVersion"], name=doc["name"])
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/dev/null",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": os.environ["PATH"]}
    out = subprocess.run([shutil.which("host-local", path="/usr/lib/cni")], env=env,
                         input=json.dumps(conf), capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert sorted(ip["address"] for ip in result["ips"]) == \
        ["10.244.1.2/24", "fd00:10:244:1::2/64"]
    assert "routes" not in result  # isDefaultGateway adds them in the bridge plugin
    assert (tmp_path / "ipam" / "kubernetes" / "10.244.1.2").read_text().startswith("c1")
