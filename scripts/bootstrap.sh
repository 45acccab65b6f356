#!/usr/bin/env bash
# Install everything phoenixci needs on a fresh Debian/Ubuntu machine (run as root).
# Idempotent: a second run checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v make >/dev/null || need_apt+=(make)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# the local cloud's instance runtime (root): base image, namespaces, bridges, firewall, DHCP, ssh
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v nft >/dev/null || need_apt+=(nftables)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v curl >/dev/null || need_apt+=(curl)
# the acceptance tests look at Buildbot's web UI as a visitor would: Debian's headless Chromium
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${need_apt[*]}; run as root or install them" >&2; exit 1
  fi
  echo "bootstrap: apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.phoenixci-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing phoenixci and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -m pip install -q -e '.[host,dev]' 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import phoenixci.cli, moto, boto3, cfnlint, ansible, testinfra' \
    || { echo "bootstrap: install failed" >&2; exit 1; }
  touch "$stamp"
fi
