#!/usr/bin/env bash
# Installs what deno-criu needs on a fresh Debian machine that has node/npm:
# deno (from npm), protoc, crit (Debian's criu package), gcc and binutils, nftables, iptables,
# iproute2, redis-server, lxc, debootstrap, runc, podman and uidmap; then the npm
# dependencies. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ld >/dev/null || need_apt+=(binutils)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v crit >/dev/null || need_apt+=(criu)
command -v python3 >/dev/null || need_apt+=(python3)
# The network lock (nftables by default, iptables as criu's other method), the peer's network
# namespace (ip, ss), and a real server for the TCP tests.
command -v nft >/dev/null || need_apt+=(nftables)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ss >/dev/null || need_apt+=(iproute2)
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The container test: LXC and its Debian template (debootstrap).
command -v lxc-create >/dev/null || need_apt+=(lxc)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
# Container runtimes that drive criu through its RPC: runc, and podman on it.
command -v runc >/dev/null || need_apt+=(runc)
command -v podman >/dev/null || need_apt+=(podman)
# An unprivileged container's id maps (newuidmap, newgidmap).
command -v newuidmap >/dev/null || need_apt+=(uidmap)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing ${need_apt[*]}; run as root or: apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v deno >/dev/null || [[ "$(deno --version | head -1)" != "deno ${DENO_VERSION} "* ]]; then
  if ! command -v npm >/dev/null; then
    echo "setup: deno is missing and so is npm; install Node.js/npm, then run this again" >&2
    exit 1
  fi
  echo "setup: installing deno ${DENO_VERSION} from npm" >&2
  npm install -g --silent "deno@${DENO_VERSION}" >/dev/null 2>&1 ||
    npm install -g --silent --allow-scripts=deno "deno@${DENO_VERSION}" >/dev/null
fi
deno --version | head -1 >&2
deno install --quiet >/dev/null
# The command line's bundled build (main.ts runs it while it is current, else the sources).
deno task --quiet bundle >&2 || echo "setup: no bundled build (the command line runs from the sources)" >&2
