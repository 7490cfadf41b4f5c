"""Golden restore text: what one ADD/DEL writes for representative configurations."""
import ipaddress

from cni.portmap import config, rules
from lowlevel import xtables as ipt

CHAIN = "KRT-DN-9a89f8c6d202df5b9f652"   # container "cid1", interface "eth0": pinned on purpose
COMMENT = r'"dnat name: \"net1\" id: \"cid1\" if: \"eth0\""'
SHARED = """\
-N CNI-HOSTPORT-SETMARK
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-N CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-I POSTROUTING 1 -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-N CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
"""
# What iptables-save prints once another container's ADD made the shared chains.
SAVED_SHARED = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
COMMIT
"""


def restore_for(conf: dict, address: str, saved: str = "") -> str:
    conf = {"name": "net1", **conf}
    plan = rules.build_plan(config.parse_config(conf), "cid1", "eth0",
                              ipaddress.ip_interface(address))
    table = ipt.parse_save(saved).get("nat", ipt.SavedTable("nat"))
    return rules.build_add_restore(plan, table)


def mappings(*entries):
    return {"runtimeConfig": {"portMappings": list(entries)}}


def test_ipv4_tcp_on_an_empty_table():
    text = restore_for(mappings({"hostPort": 8080, "containerPort": 80}), "10.0.0.2/24")
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
{SHARED}\
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A {CHAIN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -s 127.0.0.0/8 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT
"""


def test_shared_chains_and_jumps_that_exist_are_left_alone():
    text = restore_for(mappings({"hostPort": 8080, "containerPort": 80}), "10.0.0.2/24",
                       SAVED_SHARED)
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A {CHAIN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -s 127.0.0.0/8 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT
"""


def test_a_repeated_add_replaces_its_own_jumps():
    saved = SAVED_SHARED.replace("COMMIT", f"""\
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 7070 -j {CHAIN}
-A {CHAIN} -p tcp -m tcp --dport 7070 -j DNAT --to-destination 10.0.0.2:70
COMMIT""")
    text = restore_for(mappings({"hostPort": 8080, "containerPort": 80}), "10.0.0.2/24", saved)
    assert text.splitlines()[:4] == [
        "*nat", f":{CHAIN} - [0:0]",
        f"-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports 7070 -j {CHAIN}",
        f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports 8080 -j {CHAIN}"]
    assert "7070" not in "".join(text.splitlines()[4:])


def test_udp_with_host_ip():
    text = restore_for(mappings({"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP",
                                 "HostIP": "192.0.2.1"}), "10.0.0.2/24", SAVED_SHARED)
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {COMMENT} -m multiport --dports 5353 -j {CHAIN}
-A {CHAIN} -s 10.0.0.0/24 -d 192.0.2.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -s 127.0.0.0/8 -d 192.0.2.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -d 192.0.2.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.0.0.2:53
COMMIT
"""


def test_ipv6_skips_ipv4_host_ips_and_has_no_localhost_rule():
    text = restore_for(mappings({"hostPort": 8080, "containerPort": 80, "hostIP": "fd00::10"},
                                {"hostPort": 9090, "containerPort": 90, "hostIP": "192.0.2.1"},
                                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}),
                       "fd00::2/64")
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
{SHARED}\
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {COMMENT} -m multiport --dports 5353 -j {CHAIN}
-A {CHAIN} -s fd00::/64 -d fd00::10/128 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -d fd00::10/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80
-A {CHAIN} -s fd00::/64 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -p udp -m udp --dport 5353 -j DNAT --to-destination [fd00::2]:53
COMMIT
"""


def test_a_family_with_no_applicable_mapping_gets_no_plan():
    conf = config.parse_config({"name": "net1", **mappings(
        {"hostPort": 80, "containerPort": 80, "hostIP": "192.0.2.1"})})
    assert rules.build_plan(conf, "cid1", "eth0", ipaddress.ip_interface("fd00::2/64")) is None


def test_masq_all_marks_every_connection():
    text = restore_for({"masqAll": True, **mappings({"hostPort": 8080, "containerPort": 80},
                                                    {"hostPort": 8443, "containerPort": 443})},
                       "10.0.0.2/24", SAVED_SHARED)
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080,8443 -j {CHAIN}
-A {CHAIN} -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
-A {CHAIN} -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
-A {CHAIN} -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.2:443
COMMIT
"""


def test_conditions_external_mark_chain_and_unspecified_host_ip():
    text = restore_for({"externalSetMarkChain": "KUBE-MARK-MASQ",
                        "conditionsV4": ["!", "-s", "10.9.0.0/16"],
                        "conditionsV6": ["-d", "fd00::/8"],
                        **mappings({"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"})},
                       "10.0.0.2/24")
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
-N CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 ! -s 10.9.0.0/16 -j {CHAIN}
-A {CHAIN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ
-A {CHAIN} -s 127.0.0.0/8 -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT
"""


def test_snat_off_writes_no_mark_rules_and_no_masquerade_chains():
    text = restore_for({"snat": False, "markMasqBit": 5,
                        **mappings({"hostPort": 8080, "containerPort": 80})}, "10.0.0.2/24")
    assert text == f"""\
*nat
:{CHAIN} - [0:0]
-N CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT
"""


def test_another_mark_bit_adds_its_own_rules_to_the_shared_chains():
    text = restore_for({"markMasqBit": 5, **mappings({"hostPort": 1, "containerPort": 1})},
                       "10.0.0.2/24", SAVED_SHARED)
    assert ("-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" "
            "-j MARK --set-xmark 0x20/0x20") in text
    assert "-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE" in text
    assert "-N " not in text and "POSTROUTING" not in text


def test_many_mappings_split_into_multiport_groups_of_15():
    entries = [{"hostPort": 10000 + i, "containerPort": 80 + i} for i in range(20)]
    entries += [{"hostPort": 10000, "containerPort": 80, "hostIP": "192.0.2.9"}]  # same port twice
    entries += [{"hostPort": 20000 + i, "containerPort": 53, "protocol": "sctp"} for i in range(2)]
    text = restore_for(mappings(*entries), "10.0.0.2/24", SAVED_SHARED)
    jumps = [line for line in text.splitlines() if line.startswith("-A CNI-HOSTPORT-DNAT")]
    first = ",".join(str(10000 + i) for i in range(15))
    second = ",".join(str(10015 + i) for i in range(5))
    assert jumps == [
        f"-A CNI-HOSTPORT-DNAT -p sctp -m comment --comment {COMMENT} -m multiport "
        f"--dports 20000,20001 -j {CHAIN}",
        f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports {first} -j {CHAIN}",
        f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports {second} -j {CHAIN}"]
    dnat = [line for line in text.splitlines() if "-j DNAT" in line]
    assert len(dnat) == 23
    # Mapping order is kept: the specific hostIP rule comes after the catch-all of its port.
    assert dnat[0].endswith("--dport 10000 -j DNAT --to-destination 10.0.0.2:80")
    assert "-d 192.0.2.9/32" in dnat[20]


def test_delete_removes_only_jumps_to_our_chain_and_the_chain():
    saved = SAVED_SHARED.replace("COMMIT", f"""\
:{CHAIN} - [0:0]
:KRT-DN-0000000000000000000000 - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 9090 -j KRT-DN-0000000000000000000000
-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT""")
    table = ipt.parse_save(saved)["nat"]
    assert rules.build_del_restore(CHAIN, table) == f"""\
*nat
-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-F {CHAIN}
-X {CHAIN}
COMMIT
"""


def test_the_last_delete_removes_the_shared_chains_and_their_jumps():
    saved = SAVED_SHARED.replace("COMMIT", f"""\
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-A {CHAIN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
COMMIT""")
    assert rules.build_del_restore(CHAIN, ipt.parse_save(saved)["nat"]) == f"""\
*nat
-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
-F {CHAIN}
-X {CHAIN}
-D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-X CNI-HOSTPORT-DNAT
-F CNI-HOSTPORT-SETMARK
-X CNI-HOSTPORT-SETMARK
-D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-F CNI-HOSTPORT-MASQ
-X CNI-HOSTPORT-MASQ
COMMIT
"""


def test_delete_with_nothing_there_writes_nothing():
    assert rules.build_del_restore(CHAIN, ipt.parse_save(SAVED_SHARED)["nat"]) == ""
    assert rules.build_del_restore(CHAIN, ipt.SavedTable("nat")) == ""


def test_check_passes_on_what_add_wrote_and_names_what_differs():
    conf = config.parse_config({"name": "net1", "conditionsV4": ["!", "-s", "10.9.0.0/16"],
                                 **mappings({"hostPort": 8080, "containerPort": 80})})
    plan = rules.build_plan(conf, "cid1", "eth0", ipaddress.ip_interface("10.0.0.2/24"))
    # iptables-save puts the condition first: the jump still counts as ours and right.
    saved = SAVED_SHARED.replace("COMMIT", f"""\
:{CHAIN} - [0:0]
-A CNI-HOSTPORT-DNAT ! -s 10.9.0.0/16 -p tcp -m comment --comment {COMMENT} -m multiport --dports 8080 -j {CHAIN}
""" + "\n".join(f"-A {CHAIN} {rule}" for rule in plan.rules) + "\nCOMMIT")
    assert rules.check_plan(plan, ipt.parse_save(saved)["nat"]) == []

    wrong_port = saved.replace("--to-destination 10.0.0.2:80", "--to-destination 10.0.0.2:81")
    problems = rules.check_plan(plan, ipt.parse_save(wrong_port)["nat"])
    assert len(problems) == 1 and "10.0.0.2:81" in problems[0]

    no_jump = "\n".join(line for line in saved.splitlines()
                        if not line.startswith("-A CNI-HOSTPORT-DNAT"))
    problems = rules.check_plan(plan, ipt.parse_save(no_jump)["nat"])
    assert len(problems) == 1 and "jumps to" in problems[0]

    no_masq = saved.replace("-A POSTROUTING", "-A INPUT")
    problems = rules.check_plan(plan, ipt.parse_save(no_masq)["nat"])
    assert problems == ['rule missing: -I POSTROUTING 1 -m comment --comment '
                        '"CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ']
