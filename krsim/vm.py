"""The service proxy needs IPVS: find out whether this kernel has it, and re-run in the VM.

``run --vm`` re-runs the same command inside ``tests/vm/run`` (a Debian kernel
under QEMU that shares the current directory read-write and sees the host's
root read-only under a throw-away overlay).
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
VM_RUNNER = REPO / "tests" / "vm" / "run"
IPVS_NOTE = ("note: the service proxy needs IPVS, which this kernel lacks: svc/ and nodeport/ "
             "probes cannot be answered here. Try `kube-router-sim run --vm ...` to run the same "
             "scenario in a Debian-kernel VM.")


def ipvs_available() -> bool:
    if os.path.exists("/proc/net/ip_vs"):
        return True
    # A dry run: says whether the module exists without loading it.
    probe = subprocess.run(["modprobe", "-n", "-q", "ip_vs"], capture_output=True)
    return probe.returncode == 0


def vm_argv(args: list[str]) -> list[str]:
    """``args`` (the sim's own arguments, without --vm) as a command for the VM runner."""
    return [str(VM_RUNNER), "--", sys.executable, "-m", "krsim.cli", *args]


def outside_cwd(path: str) -> bool:
    """The guest writes only the shared current directory back to the host."""
    cwd = os.path.realpath(os.getcwd())
    return os.path.commonpath([cwd, os.path.realpath(path)]) != cwd


def rerun_in_vm(args: list[str]) -> int:
    if not os.access(VM_RUNNER, os.X_OK):
        raise FileNotFoundError(f"the VM runner {VM_RUNNER} is missing (a checkout of the "
                                "project has it)")
    proc = subprocess.Popen(vm_argv(args))

    def forward(signum, _frame):
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
