#!/usr/bin/env bash
# The whole test suite: set up .venv with the test extras, lint (ruff), validate the napari
# manifest, then run pytest (napari under Xvfb, OpenCL on PoCL, real dask schedulers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh test
.venv/bin/ruff check .
.venv/bin/npe2 validate napari.yaml
.venv/bin/python -m pytest "$@"
