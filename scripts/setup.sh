#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian / Raspberry Pi OS machine:
# the Debian packages (as root, or through sudo), a virtualenv in .venv and the package.
#   scripts/setup.sh            runtime
#   scripts/setup.sh test       runtime + test tools (PulseAudio for the clocked tests, espeak-ng, sox)
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-run}

debs=(python3-venv python3-dev gcc pkg-config libasound2-dev libsystemd-dev)
debs+=(libspeexdsp1)  # [audio.processing] double_talk (appliance/audio/nearend.py, ctypes)
if [ "$want" = test ]; then
  debs+=(pulseaudio pulseaudio-utils libasound2-plugins alsa-utils systemd)
  debs+=(espeak-ng)  # synthesized wake-word recordings (bench/wake_corpus.py), agent speech (tests/test_aec.py)
  debs+=(sox)  # an independent G.711 encoder/decoder (tests/test_g711_sox.py)
  debs+=(mosquitto)  # the MQTT broker tests/test_mqtt.py starts on a loopback port (not as a service)
fi

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  echo "setup: installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.installed-$want
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  if [ "$want" = test ]; then
    .venv/bin/pip install -q -e '.[test]'
  else
    .venv/bin/pip install -q -e .
  fi
  touch "$stamp"
fi
