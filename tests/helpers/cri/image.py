"""A one-layer OCI image built from the static busybox binary, so nothing is pulled.

The layer holds /bin/busybox, the applets the tests run, and a web root with two
CGI scripts: ``whoami`` answers with the client address the pod saw
(REMOTE_ADDR), so a test can tell a masqueraded connection from a direct one;
``fetch?HOST:PORT/PATH`` makes the pod itself fetch that URL and returns the
body, so a test can send traffic *from* the pod without exec'ing into it.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "httpd", "sleep", "nc", "sed", "cat")
WEB_ROOT = "/www"
INDEX_TEXT = "served by busybox httpd in a CRI container\n"
WHOAMI_CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n'
# nc, not wget: Debian bookworm's busybox-static (1.35.0) wget dies with SIGSEGV
# (NULL dereference, before it connects) whenever -T is given, and without -T a
# broken path hangs the test instead of failing it.
FETCH_CGI = r"""#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
hostport=${QUERY_STRING%%/*}
printf 'GET /%s HTTP/1.0\r\n\r\n' "${QUERY_STRING#*/}" |
  nc -w 3 "${hostport%:*}" "${hostport##*:}" | sed '1,/^\r$/d'
"""
_MTIME = 1_700_000_000   # fixed, so the same inputs give the same digests


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, _MTIME, link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_layer(busybox: str = BUSYBOX) -> bytes:
    with open(busybox, "rb") as f:
        binary = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "www", "www/cgi-bin"):
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", data=binary, mode=0o755)
        for applet in APPLETS:
            _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        _add(tar, "etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n")
        _add(tar, "etc/group", data=b"root:x:0:\n")
        _add(tar, "www/index.html", data=INDEX_TEXT.encode())
        _add(tar, "www/cgi-bin/whoami", data=WHOAMI_CGI.encode(), mode=0o755)
        _add(tar, "www/cgi-bin/fetch", data=FETCH_CGI.encode(), mode=0o755)
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data=data)
    return f"sha256:{digest}"


def build_oci_archive(ref: str, entrypoint: list[str], busybox: str = BUSYBOX) -> bytes:
    """An OCI image-layout tarball that ``ctr image import`` names ``ref``."""
    layer = build_layer(busybox)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        _add(tar, "blobs", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE, mode=0o755)
        layer_digest = _blob(tar, layer)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }, sort_keys=True).encode()
        config_digest = _blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer)}],
        }, sort_keys=True).encode()
        manifest_digest = _blob(tar, manifest)
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}}]}
        _add(tar, "index.json", data=json.dumps(index, sort_keys=True).encode())
        _add(tar, "oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}')
    return out.getvalue()
