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
# the whole chain in one command: stages 1-3 and the custom steps, then kernels, anchoring, the
# ladder and the release (what make_kernels.py, anchor_data.py, convolve_data.py and
# prepare_release.py do one at a time)
$py run_jwst_reprocessing.py "${cfg[@]}" --through release "$@"
echo
echo "Mosaics and PNG quicklooks:"
ls -1 demo_output/work/jwst_lv3_reprocessed_demo/*/*/lv3/*_i2d.fits demo_output/work/jwst_lv3_reprocessed_demo/*/*/lv3/*_i2d.png
echo "Release (with MANIFEST.ecsv, SHA256SUMS, README.md): demo_output/work/jwst_release/demo/"
