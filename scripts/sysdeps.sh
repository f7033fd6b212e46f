#!/usr/bin/env bash
# Install the Debian packages armq's QEMU and ssh targets need, when missing.
#   qemu-user-static  qemu-aarch64-static: runs the aarch64 sysroot (no binfmt_misc needed)
#   qemu-user         the dynamic qemu-aarch64, which accepts -plugin (instruction counts)
#   libglib2.0-dev    headers to build the TCG plugin
#   openssh-server/client  the ssh target's tests run a real sshd on 127.0.0.1
# Without root (or without apt) it only reports what is missing: those targets then
# fail with a one-line error naming the package, the rest of armq works.
set -u
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev pkg-config)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v scp >/dev/null || need+=(openssh-client)
command -v gcc >/dev/null || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "armq: missing system packages (install them for the qemu/ssh targets): ${need[*]}" >&2
    exit 0
fi
echo "armq: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "armq: apt-get install ${need[*]} failed" >&2; exit 1; }
