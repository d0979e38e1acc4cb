#!/usr/bin/env bash
# Offline demo: set up .venv if needed, simulate a small NIRCam + MIRI programme of a synthetic
# galaxy, reduce it with the real jwst stage 1-3 pipelines, make PSF-matching kernels, anchor every
# band's background to (simulated) Spitzer maps, convolve every mosaic to each rung of the resolution
# ladder and assemble the release. Outputs go to demo_output/.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
cfg=(config/demo.toml config/demo_local.toml)
py=.venv/bin/python
$py run_jwst_reprocessing.py "${cfg[@]}" "$@"
$py make_kernels.py "${cfg[@]}"
$py anchor_data.py "${cfg[@]}"
$py convolve_data.py "${cfg[@]}"
$py prepare_release.py "${cfg[@]}"
echo
echo "Mosaics and PNG quicklooks:"
ls -1 demo_output/work/jwst_lv3_reprocessed_demo/*/*/lv3/*_i2d.fits demo_output/work/jwst_lv3_reprocessed_demo/*/*/lv3/*_i2d.png
echo "Release (with MANIFEST.ecsv, SHA256SUMS, README.md): demo_output/work/jwst_release/demo/"
