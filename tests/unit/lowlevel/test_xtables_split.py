"""iptables.split_rule: the shell-word splitting of shlex.split, without importing it."""
import shlex
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lowlevel import xtables as ipt

# The characters that matter to the splitter, plus ordinary ones.
rule_text = st.text(alphabet=" \t\r\n\"'\\ab-#:", max_size=40)


@settings(max_examples=5000)
@given(rule_text)
@example('-m comment --comment "dnat name: \\"k8s\\" id: \\"c1\\"" -j CNI-DN-1')
@example('"" x')
@example("'' \"\"")
@example('"a\\b\\\\c"')
@example("a\\")
@example('"a\\')
@example("'a")
def test_split_rule_is_shlex_split(text):
    try:
        want = shlex.split(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            ipt.split_rule(text)
    else:
        assert ipt.split_rule(text) == want


def test_iptables_save_quoting_round_trips():
    comment = 'dnat name: "k8s-pod-network" id: "ab\\c"'
    rule = ipt.format_args(["-m", "comment", "--comment", comment, "-j", "CNI-DN-x"])
    assert ipt.split_rule(rule) == ["-m", "comment", "--comment", comment, "-j", "CNI-DN-x"]
    assert ipt.rule_target(rule) == "CNI-DN-x"


def test_reading_quoted_rules_does_not_import_re():
    root = __file__.rsplit("/tests/", 1)[0]
    code = (f"import sys; sys.path.insert(0, {root!r}); from lowlevel import xtables; "
            "xtables.rule_target('-m comment --comment \"a b\" -j X'); "
            "print(sorted({'re', 'shlex', 'enum'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
