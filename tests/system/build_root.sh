#!/usr/bin/env bash
# Builds, once, the Debian bookworm root that tests/system/systest.py boots under systemd,
# and prints its path. Cached under $APPLIANCE_SYSTEST_CACHE (default
# /var/cache/appliance-systest, outside the repo), keyed by a hash of the package list, this
# script and pyproject.toml, so a rerun finds it in a second.
#
# The root has what scripts/install.sh would apt-get (so the test does not wait for apt),
# a user "pi" with password-less sudo, the host's CA bundle for pip (registries are reached
# through a TLS proxy here), and a wheelhouse of the project's dependencies with pip pointed
# at it alone: the install inside the test then builds only the appliance package itself,
# with the same pip and the same versions a Pi owner's install would resolve today.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${APPLIANCE_SYSTEST_CACHE:-/var/cache/appliance-systest}
mirror=${APPLIANCE_SYSTEST_MIRROR:-http://deb.debian.org/debian}
pkgs=systemd,systemd-sysv,dbus,sudo,make,ca-certificates,python3,python3-venv,python3-dev
pkgs+=,gcc,libc6-dev,pkg-config,libasound2-dev,libsystemd-dev,libspeexdsp1,procps
key=$({ echo "$pkgs"; cat "$0" "$repo/pyproject.toml"; } | sha256sum | cut -c1-16)
root=$cache/$key
if [ -e "$root/.complete" ]; then
  echo "$root"
  exit 0
fi
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null || {
    echo "build_root: $tool is missing: apt-get install debootstrap systemd-container" >&2
    exit 1
  }
done
mkdir -p "$cache"
tmp=$root.tmp
rm -rf "$tmp"
echo "build_root: debootstrap bookworm into $tmp (1-3 min)" >&2
debootstrap --variant=minbase --include="$pkgs" bookworm "$tmp" "$mirror" >&2

install -m 0644 /etc/ssl/certs/ca-certificates.crt "$tmp/usr/local/share/host-ca.crt"
printf '[global]\ncert = /usr/local/share/host-ca.crt\n' >"$tmp/etc/pip.conf"
echo appliance-systest >"$tmp/etc/hostname"
# The wheelhouse: every dependency of appliance[aec,pi], and the build backend.
mkdir -p "$tmp/src"
tar -C "$repo" --exclude=.venv --exclude=.git --exclude=out --exclude='*.egg-info' \
  --exclude=build -cf - pyproject.toml README.md appliance | tar -C "$tmp/src" -xf -
echo "build_root: building the wheelhouse (a few minutes the first time)" >&2
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q --register=no --keep-unit -D "$tmp" \
  /bin/sh -ec '
    useradd --create-home --shell /bin/bash --groups sudo pi
    echo "pi ALL=(ALL) NOPASSWD: ALL" >/etc/sudoers.d/pi
    chmod 0440 /etc/sudoers.d/pi
    python3 -m venv /tmp/w
    /tmp/w/bin/pip install -q --upgrade pip
    /tmp/w/bin/pip wheel -q -w /var/cache/appliance-wheels "/src[aec,pi]"
    /tmp/w/bin/pip download -q -d /var/cache/appliance-wheels pip "setuptools>=77" wheel
    rm -f /var/cache/appliance-wheels/appliance-*.whl
    rm -rf /tmp/w /src
  ' >&2
printf '[global]\ncert = /usr/local/share/host-ca.crt\nno-index = true\nfind-links = /var/cache/appliance-wheels\n' \
  >"$tmp/etc/pip.conf"
touch "$tmp/.complete"
mv "$tmp" "$root"
echo "$root"
