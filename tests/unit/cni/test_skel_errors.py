"""The skel's contract, through the real console entry point: every error is spec JSON."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import skel
from cnirun import host_local_conf, run_plugin


def assert_spec_error(run, code, *needles):
    assert run.rc == 1, run
    err = run.json
    assert set(err) == {"cniVersion", "code", "msg", "details"}, err
    assert err["code"] == code, err
    assert err["cniVersion"] in skel.SUPPORTED_VERSIONS
    text = err["msg"] + " " + err["details"]
    for needle in needles:
        assert needle in text, err
    assert "Traceback" not in run.stdout.decode() + run.stderr.decode()


@pytest.mark.parametrize("command, var", [
    ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_NETNS"), ("ADD", "CNI_IFNAME"),
    ("CHECK", "CNI_CONTAINERID"), ("CHECK", "CNI_NETNS"), ("CHECK", "CNI_IFNAME"),
    ("DEL", "CNI_CONTAINERID"), ("DEL", "CNI_IFNAME"),
])
def test_missing_required_variable_is_code_4_naming_it(ours, tmp_path, command, var):
    kwargs = {{"CNI_CONTAINERID": "container_id", "CNI_NETNS": "netns",
               "CNI_IFNAME": "ifname"}[var]: None}
    version = "1.1.0"
    run = run_plugin(ours, command, host_local_conf(tmp_path, version, subnet="10.0.0.0/24"),
                     **kwargs)
    assert_spec_error(run, skel.INVALID_ENV, var)


def test_gc_needs_cni_path(ours, tmp_path):
    run = run_plugin(ours, "GC", host_local_conf(tmp_path, "1.1.0", subnet="10.0.0.0/24"),
                     path=None, container_id=None, ifname=None, netns=None)
    assert_spec_error(run, skel.INVALID_ENV, "CNI_PATH")


def test_missing_and_unknown_command(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    env_less = run_plugin(ours, None, conf)
    assert_spec_error(env_less, skel.INVALID_ENV, "CNI_COMMAND")
    unknown = run_plugin(ours, "FROB", conf)
    assert_spec_error(unknown, skel.INVALID_ENV, "CNI_COMMAND", "FROB")


def test_del_without_netns_or_path_succeeds(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    run = run_plugin(ours, "DEL", conf, netns="", path=None)
    assert run.rc == 0 and run.stdout == b"", run


@pytest.mark.parametrize("container_id", ["-leading-dash", "a/b", "a b", "ü"])
def test_bad_container_id_is_code_4(ours, tmp_path, container_id):
    run = run_plugin(ours, "ADD", host_local_conf(tmp_path, subnet="10.0.0.0/24"),
                     container_id=container_id)
    assert_spec_error(run, skel.INVALID_ENV, "CNI_CONTAINERID")


@pytest.mark.parametrize("ifname", ["a" * 16, "eth/0", "eth:0", "e th", "..", "."])
def test_bad_ifname_is_code_4(ours, tmp_path, ifname):
    run = run_plugin(ours, "ADD", host_local_conf(tmp_path, subnet="10.0.0.0/24"), ifname=ifname)
    assert_spec_error(run, skel.INVALID_ENV, "CNI_IFNAME")


@pytest.mark.parametrize("stdin, needle", [
    (b"", "JSON"), (b"{", "JSON"), (b"\xff\xfe", "UTF-8"), (b"[1, 2]", "object"),
    (b'{"cniVersion": NaN}', "JSON"), (b"[" * 100000, "nested"),
])
def test_undecodable_config_is_code_6(ours, stdin, needle):
    run = run_plugin(ours, "ADD", None, stdin=stdin)
    assert_spec_error(run, skel.DECODE_FAILURE, needle)


def test_deeply_nested_config_is_code_6(ours):
    run = run_plugin(ours, "ADD", None, stdin=b'{"a":' * 50000 + b"1" + b"}" * 50000)
    assert_spec_error(run, skel.DECODE_FAILURE)


@pytest.mark.parametrize("version", [None, "0.2.0", "0.1.0", "2.0.0", 1, "1.0"])
def test_unsupported_version_is_code_1_naming_it(ours, tmp_path, version):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    if version is None:
        del conf["cniVersion"]
    else:
        conf["cniVersion"] = version
    run = run_plugin(ours, "ADD", conf)
    assert_spec_error(run, skel.INCOMPATIBLE_VERSION, "cniVersion",
                      "missing" if version is None else json.dumps(version))


@pytest.mark.parametrize("command, version", [
    ("GC", "1.0.0"), ("STATUS", "1.0.0"), ("GC", "0.4.0"), ("CHECK", "0.3.1"),
])
def test_command_newer_than_config_version_is_code_1(ours, tmp_path, command, version):
    run = run_plugin(ours, command, host_local_conf(tmp_path, version, subnet="10.0.0.0/24"))
    assert_spec_error(run, skel.INCOMPATIBLE_VERSION, command)


@pytest.mark.parametrize("name", [None, "", "../escape", "a/b", "-x"])
def test_bad_network_name_is_code_7(ours, tmp_path, name):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    conf["name"] = name
    run = run_plugin(ours, "ADD", conf)
    assert_spec_error(run, skel.INVALID_CONFIG, "name")
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected name"


def test_bad_cni_args_is_code_4(ours, tmp_path):
    run = run_plugin(ours, "ADD", host_local_conf(tmp_path, subnet="10.0.0.0/24"),
                     args="IgnoreUnknown=1;garbage")
    assert_spec_error(run, skel.INVALID_ENV, "CNI_ARGS", "garbage")


def test_malformed_prev_result_is_code_6(ours, tmp_path):
    conf = host_local_conf(tmp_path, subnet="10.0.0.0/24")
    conf["prevResult"] = {"ips": [{"gateway": "10.0.0.1"}]}
    run = run_plugin(ours, "DEL", conf)
    assert_spec_error(run, skel.DECODE_FAILURE, "prevResult", "address")


@pytest.mark.parametrize("asked, answered", [
    ("0.4.0", "0.4.0"), ("1.1.0", "1.1.0"), ("0.1.0", "1.1.0"), (None, "1.1.0"),
])
def test_version_echoes_the_request(ours, asked, answered):
    stdin = json.dumps({"cniVersion": asked}).encode() if asked else b""
    run = run_plugin(ours, "VERSION", None, stdin=stdin, container_id=None, ifname=None,
                     netns=None, path=None)
    assert run.rc == 0, run
    assert run.json == {"cniVersion": answered, "supportedVersions": list(skel.SUPPORTED_VERSIONS)}


def test_plugin_bug_becomes_code_999_without_traceback(capsys):
    class Broken:
        @staticmethod
        def cmd_add(req):
            raise KeyError("boom")

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0"}
    rc = skel.run(Broken, env, b'{"cniVersion": "1.0.0", "name": "n"}')
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["code"] == skel.INTERNAL and "KeyError" in out["msg"] and "boom" in out["msg"]


def test_gc_and_status_absent_from_plugin_are_no_ops(capsys):
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}
    rc = skel.run(object(), env, b'{"cniVersion": "1.1.0", "name": "n"}')
    assert rc == 0 and capsys.readouterr().out == ""


def test_request_is_immutable_and_replaceable():
    req = skel.Request(command="ADD", container_id="c", conf={"a": 1}, version="1.0.0")
    with pytest.raises(AttributeError):
        req.command = "DEL"
    other = req.replace(command="DEL")
    assert (other.command, other.container_id, req.command) == ("DEL", "c", "ADD")
    assert req == req.replace() and req != other


def _check_any_answer(run):
    assert run.rc in (0, 1), run
    assert b"Traceback" not in run.stdout + run.stderr, run
    if run.rc == 1:
        assert run.json["code"] in (1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 999), run
        assert isinstance(run.json["msg"], str) and run.json["msg"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12)
config_like = st.fixed_dictionaries({
    "cniVersion": st.sampled_from(list(skel.SUPPORTED_VERSIONS) + ["0.2.0", "x"]),
    "name": st.sampled_from(["net1", "../x", ""]),
    "ipam": st.one_of(json_values, st.fixed_dictionaries({
        "subnet": st.one_of(st.text(max_size=20), st.sampled_from(
            ["10.0.0.0/24", "10.0.0.0/31", "fd00::/120", "10.0.0.1/24"])),
        "routes": json_values, "ranges": json_values, "rangeStart": json_values})),
    "prevResult": json_values, "runtimeConfig": json_values, "args": json_values,
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stdin=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
       command=st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "BOGUS"]))
def test_fuzzed_stdin_always_answers_in_spec_format(ours, stdin, command):
    _check_any_answer(run_plugin(ours, command, None, stdin=stdin))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conf=config_like, command=st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS"]))
def test_fuzzed_configs_always_answer_in_spec_format(ours, tmp_path, conf, command):
    if isinstance(conf["ipam"], dict):
        conf["ipam"]["dataDir"] = str(tmp_path)
    else:
        conf["ipam"] = {"dataDir": str(tmp_path), "extra": conf["ipam"]}
    _check_any_answer(run_plugin(ours, command, conf))
