#!/bin/sh
# Installs promtool (Prometheus's config and rule checker, used by tests/ops) at $1.
# promtool is not on PyPI: it comes from Debian's `prometheus` package, unpacked without
# installing it (no daemon, no service), so only the one binary lands in the virtualenv.
# A promtool already on PATH is used as it is.
set -eu
dest=${1:?usage: install-promtool.sh DEST}
case $dest in /*) ;; *) dest=$(pwd)/$dest ;; esac
if existing=$(command -v promtool 2>/dev/null) && [ "$existing" != "$dest" ]; then
  ln -sf "$existing" "$dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
cd "$tmp"
if ! apt-get download prometheus >/dev/null 2>&1; then
  # No package lists yet on a fresh machine (needs root, as CI is).
  apt-get update -qq
  apt-get download prometheus
fi
dpkg-deb -x prometheus_*.deb root
install -m 0755 root/usr/bin/promtool "$dest"
"$dest" --version | head -1
