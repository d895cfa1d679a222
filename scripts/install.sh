#!/usr/bin/env bash
# Installs (or removes) appliance as a systemd service. Run through `sudo make install` /
# `sudo make uninstall`, or directly:  sudo scripts/install.sh install|uninstall
#
#   $PREFIX/venv                       virtualenv with the package   (PREFIX=/opt/appliance)
#   $UNITDIR/appliance.service         the unit                      (UNITDIR=/etc/systemd/system)
#   $SYSCONFDIR/appliance.toml         config, from config/appliance.toml; never overwritten
#   $SYSCONFDIR/credentials/inworld-api-key   the API key, root-only (0600 in a 0700 dir)
#   /var/lib/appliance                 state: created by systemd (StateDirectory=) for the
#                                      service's dynamic user, so not here
#
# The API key comes from $INWORLD_API_KEY (sudo drops it unless you use
# `sudo --preserve-env=INWORLD_API_KEY make install`), else from a prompt that does not
# echo. It is written by a shell builtin, so it never appears in a process's argv. An
# existing key file is kept unless INWORLD_API_KEY is set.
#
# DESTDIR=/some/root stages everything below that root and touches nothing of the running
# system (no apt, no groups, no systemctl). APPLIANCE_INSTALL_SKIP_VENV=1 skips the
# virtualenv (tests). PYTHON picks the interpreter for the venv (default python3).
# `uninstall` removes everything except the config and the credential.
set -euo pipefail
umask 022

src=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-install}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/appliance}
SYSCONFDIR=${SYSCONFDIR:-/etc/appliance}
UNITDIR=${UNITDIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
unit=appliance.service
live_system() { [ -z "$DESTDIR" ]; }
systemd_running() { live_system && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
say() { echo "install: $*"; }

need_root() {
  if live_system && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (sudo make $action), or set DESTDIR to stage the files" >&2
    exit 1
  fi
}

install_debs() {
  # Build dependencies of pyalsaaudio and systemd-python, as in scripts/setup.sh.
  local debs=(python3-venv python3-dev gcc pkg-config libasound2-dev libsystemd-dev)
  local missing=() p
  command -v dpkg-query >/dev/null || return 0
  for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_venv() {
  local venv="$DESTDIR$PREFIX/venv"
  if [ "${APPLIANCE_INSTALL_SKIP_VENV:-}" = 1 ]; then
    say "skipping the virtualenv (APPLIANCE_INSTALL_SKIP_VENV=1)"
    return
  fi
  live_system && install_debs
  install -d -m 0755 "$DESTDIR$PREFIX"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # A copy, not an editable install: the service must not depend on this checkout.
  "$venv/bin/pip" install -q --upgrade --no-cache-dir "$src[aec]"  # with echo cancellation
  say "installed the package into $venv"
}

install_unit() {
  install -d -m 0755 "$DESTDIR$UNITDIR"
  # The unit names the default paths; point it at the chosen ones.
  sed -e "s#/opt/appliance#$PREFIX#g" -e "s#/etc/appliance#$SYSCONFDIR#g" \
    "$src/systemd/$unit" >"$DESTDIR$UNITDIR/$unit.tmp"
  chmod 0644 "$DESTDIR$UNITDIR/$unit.tmp"
  mv -f "$DESTDIR$UNITDIR/$unit.tmp" "$DESTDIR$UNITDIR/$unit"
  say "unit $UNITDIR/$unit"
}

install_config() {
  local conf="$DESTDIR$SYSCONFDIR/appliance.toml"
  install -d -m 0755 "$DESTDIR$SYSCONFDIR"
  if [ -e "$conf" ]; then
    say "keeping the existing $SYSCONFDIR/appliance.toml"
  else
    install -m 0644 "$src/config/appliance.toml" "$conf"
    say "config $SYSCONFDIR/appliance.toml (edit it, then: systemctl reload appliance)"
  fi
}

install_credential() {
  local dir="$DESTDIR$SYSCONFDIR/credentials"
  local file="$dir/inworld-api-key" key="${INWORLD_API_KEY:-}"
  install -d -m 0700 "$dir"
  if [ -z "$key" ] && [ -s "$file" ]; then
    say "keeping the existing API key in $SYSCONFDIR/credentials/inworld-api-key"
    return
  fi
  if [ -z "$key" ] && [ -r /dev/tty ] && [ -t 0 ]; then
    read -r -s -p "Inworld API key (Base64, as the portal shows it): " key </dev/tty
    echo
  fi
  if [ -z "$key" ]; then
    say "no API key given: put it in $SYSCONFDIR/credentials/inworld-api-key (mode 0600);" \
      "the service exits with status 78 until then"
    return
  fi
  # umask 077 in a subshell: the file is never readable by others, not even for a moment.
  (
    umask 077
    printf '%s\n' "$key" >"$file.tmp"
  )
  mv -f "$file.tmp" "$file"
  chmod 0600 "$file"
  say "API key stored in $SYSCONFDIR/credentials/inworld-api-key (mode 0600)"
}

ensure_groups() {
  # The unit asks for SupplementaryGroups=audio gpio; a missing group stops it starting.
  live_system || return 0
  local g
  for g in audio gpio; do
    getent group "$g" >/dev/null || { groupadd --system "$g" && say "created group $g"; }
  done
}

do_install() {
  need_root
  install_venv
  install_config
  install_credential
  install_unit
  ensure_groups
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable "$unit"
    say "enabled; start it with: systemctl start appliance"
  elif live_system; then
    say "systemd is not running here: run 'systemctl daemon-reload && systemctl enable $unit' on the target"
  fi
}

do_uninstall() {
  need_root
  if systemd_running; then
    systemctl disable --now "$unit" 2>/dev/null || true
  fi
  rm -f "$DESTDIR$UNITDIR/$unit"
  systemd_running && systemctl daemon-reload
  rm -rf "$DESTDIR$PREFIX"
  # DynamicUser= keeps the state under /var/lib/private with a symlink in /var/lib.
  rm -rf "$DESTDIR/var/lib/private/appliance"
  rm -rf "$DESTDIR/var/lib/appliance"
  say "removed; kept $SYSCONFDIR/appliance.toml and $SYSCONFDIR/credentials"
}

case "$action" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *)
    echo "usage: $0 install|uninstall" >&2
    exit 2
    ;;
esac
