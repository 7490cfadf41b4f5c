"""bridge ipMasq: the reference's chain name and rule text, built as data."""
from cni import ipmasq
from cni.names import ipmasq_chain


def test_chain_name_matches_the_reference_scheme():
    chain, comment = ipmasq_chain("kubernetes", "abc123")
    # sha512("kubernetesabc123")[:24], as the reference's utils.FormatChainName does
    assert chain == "CNI-" + __import__("hashlib").sha512(b"kubernetesabc123").hexdigest()[:24]
    assert len(chain) == 28 and comment == 'name: "kubernetes" id: "abc123"'


def test_restore_text_accepts_the_subnet_masquerades_the_rest():
    text = ipmasq.build_restore("CNI-x", 'name: "n" id: "c"', ["10.1.0.5/24"], present=set())
    assert text == (
        "*nat\n"
        ":CNI-x - [0:0]\n"
        '-A CNI-x -d 10.1.0.0/24 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j ACCEPT\n'
        '-A CNI-x ! -d 224.0.0.0/4 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j MASQUERADE\n'
        '-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j CNI-x\n'
        "COMMIT\n")


def test_existing_postrouting_jump_is_not_added_twice():
    first = ipmasq.build_restore("CNI-x", "c", ["fd00::5/64"], present=set())
    jump = [line for line in first.splitlines() if line.startswith("-A POSTROUTING ")][0]
    again = ipmasq.build_restore("CNI-x", "c", ["fd00::5/64"],
                                 present={jump.removeprefix("-A POSTROUTING ")})
    assert "-A POSTROUTING" not in again and "ff00::/8" in again
