"""tests/vm/run's boot artifacts: a decompressed vmlinux and a small initramfs.

Both are built once per kernel (and per version of the runner) and cached in
<repo>/.vm/. Standard library only, like the runner that imports it.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import lzma
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE_DIR = os.path.join(REPO, ".vm")
RUNNER_FILES = (os.path.join(HERE, "run"), os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"
MODULES = ("virtio_pci", "9p", "9pnet_virtio", "overlay")
GUEST_XFER = "/run/krt-vm"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
XZ_MAGIC = b"\xfd7zXZ\x00"


class Missing(Exception):
    """Something the VM needs is not installed."""


def artifact_key(kernel: str, release: str) -> str:
    h = hashlib.sha256()
    for path in RUNNER_FILES:
        with open(path, "rb") as f:
            h.update(f.read())
    for path in (kernel, BUSYBOX, f"/lib/modules/{release}/modules.dep"):
        st = os.stat(path)
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ensure_artifacts(kernel: str, release: str) -> tuple[str, str]:
    """The decompressed vmlinux and the initramfs, built once per kernel/runner."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    key = artifact_key(kernel, release)
    vmlinux = os.path.join(CACHE_DIR, f"vmlinux-{release}-{key}")
    initrd = os.path.join(CACHE_DIR, f"initrd-{release}-{key}.cpio.gz")
    if not os.path.exists(vmlinux):
        _write_atomic(vmlinux, build_vmlinux(kernel))
    if not os.path.exists(initrd):
        _write_atomic(initrd, build_initramfs(release))
    cleanup_stale_artifacts(keep={vmlinux, initrd})
    return vmlinux, initrd


def _write_atomic(path: str, data: bytes) -> None:
    # Several runners may start at once; each renames its own complete copy.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def cleanup_stale_artifacts(keep: set[str]) -> None:
    for path in glob.glob(os.path.join(CACHE_DIR, "vmlinux-*")) + \
            glob.glob(os.path.join(CACHE_DIR, "initrd-*.cpio.gz")):
        if path not in keep and ".tmp" not in path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def build_vmlinux(bzimage: str) -> bytes:
    """The uncompressed kernel: TCG spends ~2.5 s decompressing a bzImage at each boot."""
    with open(bzimage, "rb") as f:
        image = f.read()
    start = image.find(XZ_MAGIC)
    if start < 0:
        raise Missing(f"{bzimage}: no xz payload found (not a Debian bzImage?)")
    # The stream is followed by the setup trailer; the decompressor stops at its end.
    vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[start:])
    if not vmlinux.startswith(b"\x7fELF"):
        raise Missing(f"{bzimage}: the xz payload is not an ELF kernel")
    return vmlinux


def resolve_modules(release: str) -> list[str]:
    """Module files in load order; modprobe resolves one module per call."""
    ordered: list[str] = []
    for module in MODULES:
        out = subprocess.run(["modprobe", "-S", release, "--show-depends", module],
                             capture_output=True, text=True,
                             env={**os.environ, "PATH": GUEST_PATH})
        if out.returncode != 0:
            raise Missing(f"modprobe cannot resolve {module} for {release}: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod" and parts[1] not in ordered:
                ordered.append(parts[1])
    return ordered


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    # busybox insmod cannot read compressed modules.
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        raise Missing(f"{path}: zstd-compressed modules are not supported")
    return data


def build_initramfs(release: str) -> bytes:
    files: list[tuple[str, int, bytes]] = [
        (d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules")]
    with open(BUSYBOX, "rb") as f:
        files.append(("bin/busybox", 0o100755, f.read()))
    names = []
    for i, path in enumerate(resolve_modules(release)):
        name = f"lib/modules/{i:02d}-{os.path.basename(path).split('.ko')[0]}.ko"
        files.append((name, 0o100644, _module_bytes(path)))
        names.append("/" + name)
    files.append(("init", 0o100755, build_init(names).encode()))
    return gzip.compress(_cpio_newc(files), compresslevel=6, mtime=0)


def _cpio_newc(files: list[tuple[str, int, bytes]]) -> bytes:
    out = io.BytesIO()

    def entry(ino: int, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))

    for ino, (name, mode, data) in enumerate(files, start=1):
        entry(ino, name, mode, data)
    entry(0, "TRAILER!!!", 0, b"")
    return out.getvalue()


def build_init(modules: list[str]) -> str:
    """The initramfs /init: modules, mounts, then switch_root into the overlay."""
    insmods = "\n".join(f"insmod {m} || fail 'insmod {m}'" for m in modules)
    return f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "VM init: $*" >/dev/console; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}
p9=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /mnt/xfer /mnt/lower /mnt/rw /mnt/root
mount -t 9p -o $p9 xfer /mnt/xfer || fail 'mount xfer share'
mount -t 9p -o $p9,cache=loose,ro hostroot /mnt/lower || fail 'mount host root'
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \\
    overlay /mnt/root || fail 'mount overlay'
cwd=$(cat /mnt/xfer/cwd)
mount -t tmpfs -o mode=0755 tmpfs /mnt/root/run
mount -t tmpfs -o mode=1777 tmpfs /mnt/root/tmp
# After the tmpfs mounts, so a directory under /tmp or /run stays visible.
if [ "$cwd" != / ]; then
    mkdir -p "/mnt/root$cwd"
    mount -t 9p -o $p9,cache=loose cwd "/mnt/root$cwd" || fail "mount $cwd"
fi
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts
ip link set lo up
mkdir -p /mnt/root{GUEST_XFER}
mount --move /mnt/xfer /mnt/root{GUEST_XFER}
for fs in proc sys dev; do mount --move /$fs /mnt/root/$fs; done
# The host's busybox-static: one file to load over 9p where dash needs its libraries.
exec switch_root /mnt/root {BUSYBOX} sh {GUEST_XFER}/stage2
"""
