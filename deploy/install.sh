#!/usr/bin/env bash
# System packages and host preparation for pyswarm (Debian 12, as root).
# Idempotent: safe to rerun. `install.sh packages` installs what is missing;
# `install.sh host` prepares the kernel side (cgroups, modules, forwarding).
set -euo pipefail

PACKAGES=(crun runc conmon busybox-static nftables iproute2 skopeo iperf3 python3-venv
          util-linux kmod docker-registry apache2-utils openssl)

die() { echo "install.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (containers, cgroups and netlink need it)"

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "install.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's docker-registry is an interop peer for the tests, started by them on a
    # loopback port; its packaged service would hold port 5000 on systemd hosts.
    if command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
}

prepare_host() {
    # The same checks the daemon runs at start-up; kept in one place (agent/hostprep.py).
    .venv/bin/python -m agent.hostprep
}

case "${1:-all}" in
    packages) install_packages ;;
    host) prepare_host ;;
    all) install_packages; prepare_host ;;
    *) die "usage: install.sh [packages|host|all]" ;;
esac
