"""Telling the plugin's own network namespace from a container's: (st_dev, st_ino) on nsfs."""
import os
import shutil
import subprocess
import time

import pytest

from lowlevel import netns


def _stat(dev: int, ino: int) -> os.stat_result:
    return os.stat_result((0o100444, ino, dev, 1, 0, 0, 0, 0, 0, 0))


def test_a_namespace_is_its_device_and_inode():
    assert netns.same_namespace(_stat(4, 4026531840), _stat(4, 4026531840))
    assert not netns.same_namespace(_stat(4, 4026531840), _stat(4, 4026532001))  # other netns
    assert not netns.same_namespace(_stat(4, 4026531840), _stat(5, 4026531840))  # other fs


def test_every_path_to_the_own_namespace_is_the_own_namespace():
    mine = os.stat("/proc/thread-self/ns/net")
    for path in ("/proc/self/ns/net", f"/proc/{os.getpid()}/ns/net",
                 f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net"):
        assert netns.same_namespace(os.stat(path), mine), path
    # Another kind of namespace of this very process is another inode.
    assert not netns.same_namespace(os.stat("/proc/self/ns/uts"), mine)


def test_open_container_netns_refuses_the_own_namespace_and_closes_its_fd():
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(netns.NodeNetns) as info:
        netns.open_container_netns("/proc/self/ns/net")
    assert "/proc/self/ns/net" in info.value.strerror and "own network namespace" in str(info.value)
    assert not isinstance(info.value, netns.NotANetns)   # DEL tells "gone" from "the node's"
    assert set(os.listdir("/proc/self/fd")) == before


def test_open_container_netns_takes_another_namespace():
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to make a second network namespace")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make an unprivileged network namespace: {probe.stderr.decode().strip()}")
    other = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "30"])
    try:
        path = f"/proc/{other.pid}/ns/net"
        # unshare execs sleep once the namespace exists: wait until its netns differs from ours.
        for _ in range(200):
            if not netns.same_namespace(os.stat(path), os.stat("/proc/self/ns/net")):
                break
            time.sleep(0.01)
        fd = netns.open_container_netns(path)
        try:
            assert not netns.is_current_netns(fd)
        finally:
            os.close(fd)
    finally:
        other.kill()
        other.wait()
