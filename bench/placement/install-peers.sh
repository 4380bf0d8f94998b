#!/usr/bin/env bash
# Installs the partitioners Neptune's placement benchmark compares against.
# Debian: scotch (scotch_gpart, gmap), metis (gpmetis). PyPI: mtkahypar, kahip,
# highspy (exact ILP optimum at n = 20), matplotlib (plots).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
if ! command -v scotch_gpart >/dev/null 2>&1 && ! command -v gpart >/dev/null 2>&1 || ! command -v gpmetis >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq scotch metis >/dev/null
fi
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check mtkahypar kahip highspy matplotlib numpy
