#!/usr/bin/env bash
# Offline demo: set up .venv if needed, simulate a small NIRCam + MIRI programme of a synthetic
# galaxy, and reduce it with the real jwst stage 1-3 pipelines. Outputs go to demo_output/.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python run_jwst_reprocessing.py config/demo.toml config/demo_local.toml "$@"
