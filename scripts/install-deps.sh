#!/usr/bin/env bash
# Installs what nestbox needs on a Debian or Ubuntu host, skipping what is already there:
# QEMU (the hypervisor that runs here) and qemu-img (copy-on-write disks), OVMF (UEFI firmware
# for cloud images), a guest kernel when /boot has none, a static busybox
# (the default image's userland), e2fsprogs (ext4 images), libclang (bindgen), docker-registry (a real OCI
# registry for the registry-pull tests), and
# cargo-nextest (the test runner). Safe to run again.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
{ [ -x /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'dynamically linked'; } || need+=(busybox-static)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v file >/dev/null || need+=(file)
command -v docker-registry >/dev/null || need+=(docker-registry)
# Cloud images: UEFI firmware for QEMU, and the tools the test suite builds a cloud image with.
[ -e /usr/share/ovmf/OVMF.fd ] || need+=(ovmf)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)

# A guest kernel: any /boot/vmlinuz-* with its modules will do.
have_kernel=no
for k in /boot/vmlinuz-*; do
  [ -e "$k" ] || continue
  v=${k#/boot/vmlinuz-}
  [ -d "/lib/modules/$v" ] && have_kernel=yes
done
if [ "$have_kernel" = no ]; then
  . /etc/os-release
  case "${ID:-}" in
    ubuntu) need+=(linux-image-virtual) ;;
    *) need+=(linux-image-cloud-amd64) ;;
  esac
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
