"""Fuzzing every plugin through its console entry point: any input gets spec error JSON.

Each example execs kube-router-bridge, kube-router-portmap or kube-router-host-local
as a runtime would, with CNI_NETNS naming a path that does not exist and CNI_PATH an
empty directory. The plugin runs inside fresh user, network and mount namespaces with a
private /run (``unshare -Urnm``), so whatever a fuzzed DEL or GC would clean up, an
ADD would program, or a lock file it would create, lives and dies with them: nothing
of the machine is touched.

Code 999 is the spec's "internal error". A plugin uses it for a failed CHECK (the
attachment is not what prevResult says), never for a configuration it should have
rejected; an exception that escaped a plugin reaches the runtime as 999 with the
exception's type leading the message, and that is a crash whatever the command.
"""
from __future__ import annotations

import builtins
import copy
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import skel

BIN = pathlib.Path(sys.executable).parent
PLUGINS = ("kube-router-bridge", "kube-router-portmap", "kube-router-host-local")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 999}
# KRT_FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps each test under ~10 s.
FUZZ = settings(max_examples=int(os.environ.get("KRT_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def isolated():
    """argv prefix running a plugin in its own user + network namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare to give each plugin run a private netns")
    argv = [unshare, "-Urnm", "sh", "-c", 'mount -t tmpfs krt-fuzz /run && exec "$0" "$@"']
    probe = subprocess.run([*argv, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create user, network and mount namespaces here (unshare -Urnm: "
                    f"{probe.stderr.decode(errors='replace').strip()})")
    return argv


@pytest.fixture
def sandbox(tmp_path):
    """(empty CNI_PATH dir, missing netns path, IPAM data dir)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    return str(empty), str(tmp_path / "no-such-netns"), str(tmp_path / "ipam")


def binary(name: str) -> str:
    path = BIN / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed (pip install -e . creates it)")
    return str(path)


def run(isolated, plugin, command, stdin: bytes, sandbox):
    cni_path, netns, _ = sandbox
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(CNI_COMMAND=command, CNI_CONTAINERID="fuzzctr", CNI_IFNAME="eth0",
               CNI_NETNS=netns, CNI_PATH=cni_path)
    return subprocess.run([*isolated, binary(plugin)], input=stdin, env=env,
                          capture_output=True, timeout=60)


def spec_error(proc) -> dict:
    """The error JSON of a failed run, checked against the spec's shape."""
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "Traceback" not in text, text
    assert proc.returncode == 1, (proc.returncode, text)
    err = json.loads(proc.stdout)
    assert set(err) == {"cniVersion", "code", "msg", "details"}, err
    assert err["cniVersion"] in skel.SUPPORTED_VERSIONS, err
    assert err["code"] in SPEC_CODES, err
    assert isinstance(err["msg"], str) and err["msg"], err
    assert isinstance(err["details"], str), err
    assert not escaped_exception(err), err
    return err


def escaped_exception(err: dict) -> bool:
    """skel turns an exception no plugin code handled into 999 "TypeName: text"."""
    name = err["msg"].split(":", 1)[0]
    known = getattr(builtins, name, None)
    return err["code"] == skel.INTERNAL and (
        name.endswith(("Error", "Exception")) and name.isidentifier()
        or isinstance(known, type) and issubclass(known, BaseException))


# ---- raw garbage -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=16)
raw_stdin = st.one_of(st.binary(max_size=400),
                      json_values.map(lambda v: json.dumps(v).encode()),
                      st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("plugin", PLUGINS)
@FUZZ
@given(stdin=raw_stdin, command=st.sampled_from(COMMANDS))
def test_random_input_is_a_spec_error(isolated, sandbox, plugin, stdin, command):
    spec_error(run(isolated, plugin, command, stdin, sandbox))


# ---- configuration-shaped garbage --------------------------------------------

def base_config(plugin: str, version: str, data_dir: str) -> dict:
    """A configuration the plugin accepts, with every field it reads filled in."""
    ipam = {"type": "kube-router-host-local", "dataDir": data_dir,
            "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10",
                         "rangeEnd": "10.77.0.20", "gateway": "10.77.0.1"}],
                       [{"subnet": "fd00:77::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.77.0.1"}]}
    prev = {"cniVersion": version,
            "interfaces": [{"name": "kbr-fuzz", "mac": "02:00:00:00:00:01"},
                           {"name": "veth0", "mac": "02:00:00:00:00:02"},
                           {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/x"}],
            "ips": [{"address": "10.77.0.10/24", "gateway": "10.77.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc"]}}
    conf = {"cniVersion": version, "name": "fuzznet", "type": plugin, "prevResult": prev,
            "cni.dev/valid-attachments": [{"containerID": "fuzzctr", "ifname": "eth0"}],
            "runtimeConfig": {"mac": "02:00:00:00:00:09", "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP",
                 "HostIP": "127.0.0.1"}]},
            "args": {"cni": {"mac": "02:00:00:00:00:08"}}, "ipam": ipam}
    if plugin == "kube-router-bridge":
        conf.update(bridge="kbr-fuzz", isGateway=True, isDefaultGateway=True, ipMasq=True,
                    hairpinMode=True, mtu=1500, vlan=0, forceAddress=False, enabledad=False,
                    dns={"nameservers": ["10.96.0.10"]})
    elif plugin == "kube-router-portmap":
        conf.update(snat=True, masqAll=False, markMasqBit=13,
                    conditionsV4=["-m", "addrtype", "--dst-type", "LOCAL"], conditionsV6=[])
    return conf


def paths(value, prefix=()):
    """Every key path in a JSON value (objects and lists), parents before children."""
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


class Deep:
    """A value nested ``depth`` levels, spliced into the JSON text after encoding:
    the test's own encoder would hit Python's recursion limit first."""

    def __init__(self, depth: int, kind: str):
        self.depth, self.kind = depth, kind

    def text(self) -> str:
        if self.kind == "list":
            return "[" * self.depth + "1" + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth


def encode(conf, deep: list[Deep]) -> bytes:
    text = json.dumps(conf)
    for i, value in enumerate(deep):
        text = text.replace(json.dumps(f"\0deep{i}"), value.text(), 1)
    return text.encode("utf-8", "surrogatepass")


huge_ints = st.sampled_from([2 ** 31, 2 ** 32 + 1, 2 ** 63, 2 ** 64 + 7, 10 ** 40, -1, -80,
                             -(2 ** 63) - 1, 0, 65536, 4095, 4096, 1 << 200])
odd_strings = st.one_of(
    st.sampled_from(["", " ", "a" * 100_000, "10.77.0.0/24\n-A INPUT -j DROP", "\0", "ü" * 300,
                     "\u202e" + "10.77.0.0/24", "\ud800", "../../etc", "10.77.0.0/33",
                     "::/0", "0.0.0.0/0", "255.255.255.255/32", "fe80::1%eth0/64", "-j",
                     "02:00:00:00:00", "ff:ff:ff:ff:ff:ff:ff", "--comment"]),
    st.text(max_size=60))
shape_swaps = st.sampled_from([[], {}, [{}], [[]], [None], {"0": {}}, [[[{"subnet": 1}]]],
                               {"subnet": "10.77.0.0/24"}, [{"address": None}], True, None,
                               1.5, 1e308, -0.0])
garbage = st.one_of(huge_ints, odd_strings, shape_swaps, json_values,
                    st.builds(Deep, st.sampled_from([50, 400, 900, 1200, 5000]),
                              st.sampled_from(["list", "object"])))


@st.composite
def mangled_configs(draw, plugin: str, data_dir: str):
    version = draw(st.sampled_from(skel.SUPPORTED_VERSIONS))
    conf = base_config(plugin, version, data_dir)
    deep: list[Deep] = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(conf))))
        parent = conf
        try:
            for key in where[:-1]:
                parent = parent[key]
            parent[where[-1]]
        except (KeyError, IndexError, TypeError):
            continue                   # an earlier mutation replaced an ancestor
        if draw(st.integers(0, 5)) == 0:
            del parent[where[-1]]
            continue
        # A copy: sampled_from hands out the same list each time, and a later mutation
        # may write into it.
        value = copy.deepcopy(draw(garbage))
        if isinstance(value, Deep):
            deep.append(value)
            value = f"\0deep{len(deep) - 1}"
        parent[where[-1]] = value
    # Leases stay in the test's directory whatever was done to the IPAM section, one
    # directory per example: an earlier example's lease is no part of this one.
    if isinstance(conf.get("ipam"), dict):
        conf["ipam"]["dataDir"] = os.path.join(data_dir, str(next(_EXAMPLES)))
    return encode(conf, deep)


_EXAMPLES = itertools.count()


@pytest.mark.parametrize("plugin", PLUGINS)
@FUZZ
@given(data=st.data(), command=st.sampled_from(COMMANDS))
def test_mangled_configuration_is_validated_never_a_crash(isolated, sandbox, plugin, data,
                                                          command):
    stdin = data.draw(mangled_configs(plugin, sandbox[2]), label="stdin")
    proc = run(isolated, plugin, command, stdin, sandbox)
    if proc.returncode == 0:
        # A mutation can leave a configuration valid; success must look like success.
        out = proc.stdout.strip()
        assert b"Traceback" not in proc.stderr, proc.stderr
        if command == "ADD":
            assert isinstance(json.loads(out), dict) and json.loads(out)["cniVersion"], out
        else:
            assert out == b"", out
        return
    err = spec_error(proc)
    if command != "CHECK" and not portmap_restore_refused(plugin, command, err):
        assert err["code"] != skel.INTERNAL, (stdin[:2000], err)


def portmap_restore_refused(plugin: str, command: str, err: dict) -> bool:
    """conditionsV4/V6 and externalSetMarkChain are iptables arguments by design: portmap
    rejects what can never be valid (control characters), and leaves the rest to
    iptables, whose refusal comes back as 999 with its message and the failing line."""
    return (plugin == "kube-router-portmap" and command == "ADD"
            and err["msg"].startswith(("iptables-restore failed", "ip6tables-restore failed")))


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_unmangled_configuration_is_accepted(isolated, sandbox, plugin):
    """The fuzz's starting point is valid: its rejections come from the mutations."""
    stdin = json.dumps(base_config(plugin, "1.1.0", sandbox[2])).encode()
    for command in ("GC", "STATUS"):
        proc = run(isolated, plugin, command, stdin, sandbox)
        assert proc.returncode == 0 and proc.stdout.strip() == b"", proc
    proc = run(isolated, plugin, "ADD", stdin, sandbox)
    if plugin == "kube-router-bridge":
        assert spec_error(proc)["code"] == skel.UNKNOWN_CONTAINER    # the netns is missing
    else:
        assert proc.returncode == 0, proc
        assert json.loads(proc.stdout)["cniVersion"] == "1.1.0"


# ---- inputs the fuzz found -------------------------------------------------------

def edited(plugin: str, data_dir: str, **changes) -> bytes:
    """The base configuration with ``changes`` ("ipam__dataDir" edits conf["ipam"]["dataDir"])."""
    conf = base_config(plugin, "1.1.0", data_dir)
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = conf
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value
    return json.dumps(conf).encode()


@pytest.mark.parametrize("plugin, command, changes", [
    # A NUL ends the C string: the kernel would act on link "br" (or path "/tmp/a");
    # a lone surrogate cannot be encoded; eight two-byte characters are 16 bytes,
    # over IFNAMSIZ.
    ("kube-router-bridge", "STATUS", {"bridge": "br\0x"}),
    ("kube-router-bridge", "ADD", {"bridge": "br\0x"}),
    ("kube-router-bridge", "STATUS", {"bridge": "\ud800"}),
    ("kube-router-bridge", "STATUS", {"bridge": "\u00fc" * 8}),
    ("kube-router-bridge", "GC", {"cni.dev/valid-attachments": [["fuzzctr", "eth0"]]}),
    ("kube-router-bridge", "GC", {"cni.dev/valid-attachments": None}),
    ("kube-router-host-local", "ADD", {"ipam__dataDir": "/tmp/\ud800"}),
    ("kube-router-host-local", "ADD", {"ipam__dataDir": "/tmp/a\0b"}),
    ("kube-router-host-local", "ADD", {"ipam__resolvConf": "/etc/\0resolv.conf"}),
    # A zoned hostIP parses but iptables cannot match it; a newline in a condition
    # would end its restore line and start a rule of the caller's choosing.
    ("kube-router-portmap", "ADD", {"runtimeConfig__portMappings__0__hostIP": "fe80::1%eth0",
                                    "prevResult__ips": [{"address": "fd00:77::2/64"}]}),
    ("kube-router-portmap", "ADD", {"conditionsV4": ["-s", "10.0.0.1\n-A POSTROUTING -j ACCEPT"]}),
])
def test_found_inputs_are_rejected_as_configuration(isolated, sandbox, plugin, command, changes):
    # json.dumps writes NUL and lone surrogates as \u escapes, as a runtime's JSON would.
    err = spec_error(run(isolated, plugin, command, edited(plugin, sandbox[2], **changes),
                         sandbox))
    assert err["code"] == skel.INVALID_CONFIG, err
