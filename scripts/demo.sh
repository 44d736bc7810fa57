#!/usr/bin/env bash
# The main job on the bundled sample data: set up .venv, then `napari-diffuse demo`, which
# denoises a fluorescence image, deblurs a photo and inpaints saturated stars, writing
# TIFF results and a before/after picture into demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh core
.venv/bin/napari-diffuse demo --out demo-output
