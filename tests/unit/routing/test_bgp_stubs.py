"""The generated GoBGP stubs: what regenerate.sh makes, and what setup.cfg promises them."""
import configparser
import filecmp
import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from proxyd.routing import gobgp_api
from proxyd.routing.gobgp_api import gobgp_pb2, gobgp_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[3]
API_DIR = pathlib.Path(gobgp_api.__file__).parent
PROTO_DIR = pathlib.Path("/usr/share/gocode/src/github.com/osrg/gobgp/api")
GENERATED = ["__init__.py", "gobgp_pb2.py", "gobgp_pb2_grpc.py", "attribute_pb2.py",
             "capability_pb2.py"]


def _gencode_version() -> Version:
    text = (API_DIR / "gobgp_pb2.py").read_text()
    return Version(re.search(r"^# Protobuf Python Version: (\S+)$", text, re.M).group(1))


def _required(name: str) -> SpecifierSet:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    for line in cfg["options"]["install_requires"].splitlines():
        match = re.fullmatch(rf"{name}\s*([<>=!~].*)", line.strip())
        if match:
            return SpecifierSet(match.group(1))
    raise AssertionError(f"{name} is not in setup.cfg's install_requires")


def test_stubs_import_as_a_package_and_know_the_service():
    assert gobgp_pb2.DESCRIPTOR.package == "apipb"
    assert hasattr(gobgp_pb2_grpc, "GobgpApiStub")
    assert "golang-github-osrg-gobgp-dev" in gobgp_api.GOBGP_API_SOURCE


def test_setup_cfg_protobuf_bound_matches_the_gencode():
    gencode, spec = _gencode_version(), _required("protobuf")
    assert gencode in spec
    # The runtime refuses gencode newer than itself: the floor must be the gencode.
    older = Version(f"{gencode.major}.{gencode.minor}.{gencode.micro - 1}") if gencode.micro \
        else Version(f"{gencode.major}.{gencode.minor - 1}.99")
    assert older not in spec, f"{spec} admits protobuf {older}, older than the gencode {gencode}"
    assert Version(f"{gencode.major + 1}.0.0") not in spec, "a new protobuf major is not promised"
    assert Version(importlib.metadata.version("protobuf")) in spec


@pytest.mark.skipif(not PROTO_DIR.is_dir(), reason="needs Debian's golang-github-osrg-gobgp-dev")
def test_regenerating_from_the_debian_protos_gives_the_stubs_in_the_tree(tmp_path):
    pytest.importorskip("grpc_tools", reason="needs grpcio-tools (the test extra)")
    shutil.copy(API_DIR / "regenerate.sh", tmp_path)
    subprocess.run(["sh", str(tmp_path / "regenerate.sh")], check=True, capture_output=True,
                   env={**os.environ, "PYTHON": sys.executable})
    made = sorted(p.name for p in tmp_path.glob("*.py"))
    assert made == sorted(GENERATED)
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, API_DIR, GENERATED, shallow=False)
    assert (mismatch, errors) == ([], []), "the stubs differ from what regenerate.sh makes"
