#!/usr/bin/env bash
# Installs (or removes) appliance as a systemd service. Run through `sudo make install` /
# `sudo make uninstall`, or directly:  sudo scripts/install.sh install|key|uninstall
#
#   $PREFIX/venv                       virtualenv with the package   (PREFIX=/opt/appliance)
#   $UNITDIR/appliance.service         the unit                      (UNITDIR=/etc/systemd/system)
#   $TMPFILESDIR/appliance.conf        makes /dev/snd at boot         (TMPFILESDIR=/etc/tmpfiles.d)
#   $BINDIR/appliance                  the command, a symlink          (BINDIR=/usr/local/bin)
#   $SYSCONFDIR/appliance.toml         config, from config/appliance.toml; never overwritten
#   $SYSCONFDIR/credentials/inworld-api-key   the API key, root-only (0600 in a 0700 dir)
#   /var/lib/appliance                 state: created by systemd (StateDirectory=) for the
#                                      service's dynamic user, so not here
#
# The API key is asked for at a prompt that does not echo (the first install, or
# `sudo make key` to replace it), or read from standard input when that is not a terminal:
# `sudo make key < keyfile`. It never passes through an environment variable (sudo logs
# the variables it preserves to the journal), argv or shell history: a shell builtin
# writes it. An install keeps the stored key.
#
# The package is built from a copy of the checkout in a temporary directory, so the
# checkout keeps belonging to its user (no root-owned build/ or *.egg-info in it).
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
TMPFILESDIR=${TMPFILESDIR:-/etc/tmpfiles.d}
BINDIR=${BINDIR:-/usr/local/bin}
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
  debs+=(libspeexdsp1)  # [audio.processing] double_talk, loaded through ctypes
  debs+=(procps)        # /bin/kill, the unit's ExecReload= (a minimal Debian lacks it)
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
  # A copy, not an editable install: the service must not depend on this checkout. Built
  # out of tree: setuptools writes build/ and *.egg-info next to the sources it builds.
  local copy
  copy=$(mktemp -d /tmp/appliance-install.XXXXXX)
  # shellcheck disable=SC2064  # expand $copy now: it is local
  trap "rm -rf '$copy'" EXIT
  tar -C "$src" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
    --exclude=./out --exclude=__pycache__ -cf - . | tar -C "$copy" -xf -
  # [aec]: echo cancellation; [pi]: lgpio, gpiozero's pin factory on Raspberry Pi OS.
  "$venv/bin/pip" install -q --upgrade --no-cache-dir "$copy[aec,pi]"
  rm -rf "$copy"
  trap - EXIT
  say "installed the package into $venv"
}

install_command() {
  # `appliance devices`, `appliance check` for the owner, on the PATH.
  install -d -m 0755 "$DESTDIR$BINDIR"
  ln -sfn "$PREFIX/venv/bin/appliance" "$DESTDIR$BINDIR/appliance"
}

install_unit() {
  install -d -m 0755 "$DESTDIR$UNITDIR"
  # The unit names the default paths; point it at the chosen ones.
  sed -e "s#/opt/appliance#$PREFIX#g" -e "s#/etc/appliance#$SYSCONFDIR#g" \
    "$src/systemd/$unit" >"$DESTDIR$UNITDIR/$unit.tmp"
  chmod 0644 "$DESTDIR$UNITDIR/$unit.tmp"
  mv -f "$DESTDIR$UNITDIR/$unit.tmp" "$DESTDIR$UNITDIR/$unit"
  say "unit $UNITDIR/$unit"
  # /dev/snd from boot on, for the unit's BindPaths= (see appliance-tmpfiles.conf).
  install -d -m 0755 "$DESTDIR$TMPFILESDIR"
  install -m 0644 "$src/systemd/appliance-tmpfiles.conf" "$DESTDIR$TMPFILESDIR/appliance.conf"
  if live_system && command -v systemd-tmpfiles >/dev/null; then
    systemd-tmpfiles --create "$TMPFILESDIR/appliance.conf"
  fi
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

# Reads the key (see the header) and stores it. $1 = "replace": always ask; otherwise a
# stored key is kept.
install_credential() {
  local dir="$DESTDIR$SYSCONFDIR/credentials"
  local file="$dir/inworld-api-key" key=""
  install -d -m 0700 "$dir"
  if [ "${1:-}" != replace ] && [ -s "$file" ]; then
    say "keeping the existing API key in $SYSCONFDIR/credentials/inworld-api-key" \
      "(replace it with: sudo make key)"
    return
  fi
  if [ -t 0 ]; then
    read -r -s -p "Inworld API key (Base64, as the portal shows it; not shown): " key
    echo
  else
    IFS= read -r key || true
  fi
  key=${key//[$'\t\r\n ']/}
  if [ -z "$key" ]; then
    say "no API key given: store it with 'sudo make key' (a prompt);" \
      "the service says 'no API key' and exits with status 78 until then"
    [ "${1:-}" != replace ]
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
  install_command
  install_config
  install_credential
  install_unit
  ensure_groups
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --quiet "$unit"
    # An upgrade takes effect at once: a running service restarts with the new venv and unit.
    if systemctl is-active --quiet "$unit"; then
      systemctl try-restart "$unit"
      say "enabled and restarted"
    else
      say "enabled; start it with: sudo systemctl start appliance"
    fi
  elif live_system; then
    say "systemd is not running here: run 'systemctl daemon-reload && systemctl enable $unit' on the target"
  fi
}

do_key() {
  need_root
  install_credential replace
  if systemd_running && systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    # A new key needs a new start: the credential is copied in when the service starts.
    systemctl reset-failed "$unit" 2>/dev/null || true
    systemctl restart "$unit"
    say "restarted appliance with the new key"
  fi
}

do_uninstall() {
  need_root
  if systemd_running; then
    systemctl disable --now "$unit" 2>/dev/null || true
  fi
  rm -f "$DESTDIR$UNITDIR/$unit" "$DESTDIR$TMPFILESDIR/appliance.conf"
  if [ -L "$DESTDIR$BINDIR/appliance" ]; then rm -f "$DESTDIR$BINDIR/appliance"; fi
  systemd_running && systemctl daemon-reload
  rm -rf "$DESTDIR$PREFIX"
  # DynamicUser= keeps the state under /var/lib/private with a symlink in /var/lib.
  rm -rf "$DESTDIR/var/lib/private/appliance"
  rm -rf "$DESTDIR/var/lib/appliance"
  say "removed; kept $SYSCONFDIR/appliance.toml and $SYSCONFDIR/credentials"
}

case "$action" in
  install) do_install ;;
  key) do_key ;;
  uninstall) do_uninstall ;;
  *)
    echo "usage: $0 install|key|uninstall" >&2
    exit 2
    ;;
esac
