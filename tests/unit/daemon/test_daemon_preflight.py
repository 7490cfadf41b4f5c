"""A controller the kernel cannot run (the service proxy without IPVS) is left out at start
with one clear error; the others run, and with none left the daemon exits 1."""
import logging
import pathlib
import signal
import subprocess
import sys
import textwrap

from proxyd import cli, daemon
from proxyd.k8s.client import KINDS
from proxyd.proxy import controller as proxy

ROOT = pathlib.Path(__file__).resolve().parents[3]
NOT_FOUND = "modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.1.0-x"


def test_no_ipvs_names_the_module_and_what_to_do():
    loads = []
    problem = proxy.ipvs_missing(exists=lambda path: False,
                                 load=lambda: loads.append(1) or NOT_FOUND)
    assert loads == [1]
    assert "kernel module ip_vs" in problem and NOT_FOUND in problem
    assert "`modprobe ip_vs`" in problem and "--run-service-proxy=false" in problem


def test_ipvs_present_or_loaded_on_demand_is_no_problem():
    def never_loads():
        raise AssertionError("ip_vs is there: nothing to load")
    assert proxy.ipvs_missing(exists=lambda path: True, load=never_loads) is None
    loaded = []
    assert proxy.ipvs_missing(exists=lambda path: path == proxy.IPVS_PROC and bool(loaded),
                              load=lambda: loaded.append(1) or "") is None


def test_load_ip_vs_reports_what_modprobe_said():
    def done(rc, stderr=""):
        return lambda *a, **kw: subprocess.CompletedProcess(a, rc, "", stderr)

    def absent(*a, **kw):
        raise FileNotFoundError(2, "No such file or directory", "modprobe")
    assert proxy.load_ip_vs(done(0)) == ""
    assert proxy.load_ip_vs(done(1, f"noise\n{NOT_FOUND}\n")) == NOT_FOUND
    assert proxy.load_ip_vs(done(1)) == "modprobe ip_vs: exit status 1"
    assert "modprobe ip_vs: " in proxy.load_ip_vs(absent) and "No such file" in proxy.load_ip_vs(absent)


def test_the_service_proxy_asks_the_injected_check():
    config, _ = cli.parse_args(["--hostname-override=node-a"])
    ctl = proxy.ServiceProxyController(config, "node-a", ipvs_check=lambda: "no IPVS here")
    assert ctl.preflight() == "no IPVS here"


class Unrunnable:
    name, kinds, sync_period, min_sync_interval = "service-proxy", ("nodes",), 3600.0, 0.0

    def preflight(self):
        return "the kernel has no IPVS, kernel module ip_vs"

    def sync(self, ctx):
        raise AssertionError("a controller that failed its preflight must never sync")


def test_with_no_controller_left_the_daemon_exits_1_saying_why(caplog):
    config, _ = cli.parse_args(["--master=http://127.0.0.1:9", "--hostname-override=node-a"])
    with caplog.at_level(logging.INFO):
        assert daemon.run(config, controllers=[Unrunnable()]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["service-proxy not started: the kernel has no IPVS, kernel module ip_vs",
                      "cannot start: no controller to run"]


SCRIPT = textwrap.dedent("""
    import sys
    from proxyd import cli, daemon
    from proxyd.proxy import controller as proxy

    class Probe:
        name, kinds, sync_period, min_sync_interval = "probe", ("nodes",), 3600.0, 0.0
        def sync(self, ctx):
            print("synced", len(ctx.stores["nodes"]), flush=True)

    config, _ = cli.parse_args(sys.argv[1:])
    no_ipvs = lambda: proxy.ipvs_missing(exists=lambda path: False, load=lambda: %r)
    ctl = proxy.ServiceProxyController(config, "node-a", ipvs_check=no_ipvs)
    sys.exit(daemon.run(config, controllers=[ctl, Probe()]))
""") % NOT_FOUND


def test_without_ipvs_the_other_controllers_run(api, tmp_path):
    api.put(KINDS["nodes"].path, "node-a")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), f"--master={api.url}",
                             "--hostname-override=node-a", "--health-port=0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "synced 1"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err.count("service-proxy not started") == 1, err
    assert err.count("kernel module ip_vs") == 1 and NOT_FOUND in err
    assert "Traceback" not in err
    assert "kube-router started on node node-a: probe\n" in err
