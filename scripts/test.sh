#!/usr/bin/env bash
# Installs everything the test suite needs, lints (with NKF_LINT=1) and runs the tests.
# As root on Debian/Ubuntu it also installs Xvfb and Mesa (napari renders with OpenGL);
# elsewhere install those yourself (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(xvfb libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3)

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  if ! dpkg -s "${SYSTEM_PACKAGES[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${SYSTEM_PACKAGES[@]}" >/dev/null
  fi
elif ! command -v Xvfb >/dev/null 2>&1; then
  echo "note: Xvfb not found; viewer tests need Xvfb and Mesa (Debian: ${SYSTEM_PACKAGES[*]})" >&2
fi

python -m pip install --quiet --disable-pip-version-check -e ".[testing]"

# Lint first (ruff is pinned in the testing extra, the same version as pre-commit).
python -m ruff check .
python -m ruff format --check .

python -m pytest "$@"
