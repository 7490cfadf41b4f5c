"""--service-tcp/-tcpfin/-udp-timeout reach IPVS (per network namespace) and converge."""
from __future__ import annotations

from proxyd.kernel.ipvs import ensure_timeouts


def test_timeouts_are_set_read_back_and_left_alone_when_equal(netns_factory):
    node = netns_factory("ipvs-timeouts")

    def shown():
        return node.exec("ipvsadm -L --timeout").stdout.split(":")[1].split()

    assert node.call(ensure_timeouts, 3600, 30, 60) is True
    assert shown() == ["3600", "30", "60"]
    assert node.call(ensure_timeouts, 3600, 30, 60) is False
    assert node.call(ensure_timeouts, 0, 45, 0) is True        # 0 keeps the others
    assert shown() == ["3600", "45", "60"]
