#!/usr/bin/env bash
# Set up a virtual environment in .venv for napari-diffuse on Debian 12 (used by demo.sh and
# test.sh). Usage: scripts/setup-env.sh core|test
#   core: python3-venv and PoCL (an OpenCL CPU device: calibration is ~17x faster on it than
#         on NumPy), then `pip install '.[opencl]'` (the solvers, CLI and demo)
#   test: also the Debian packages for headless napari (Xvfb, X/GL libraries), then
#         `pip install '.[all]'`
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-core}

packages=(python3 python3-venv python3-pip pocl-opencl-icd)
if [ "$what" = test ]; then
  packages+=(xvfb libgl1 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3
             libx11-xcb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0
             libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0
             libxcb-xkb1 libxcb-glx0)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$what" = test ]; then
  .venv/bin/python -m pip install -q '.[all]'
else
  .venv/bin/python -m pip install -q '.[opencl]'
fi
