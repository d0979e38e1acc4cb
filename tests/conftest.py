"""Test set-up: an offline CRDS environment for the whole session, set before jwst is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# CRDS reads its environment once per process: point it at a session cache before any import.
_SESSION_CRDS = Path(tempfile.mkdtemp(prefix="jwstgal-test-crds-"))
os.environ["CRDS_PATH"] = str(_SESSION_CRDS)
os.environ["CRDS_SERVER_URL"] = "https://crds-serverless-mode.stsci.edu"
os.environ["CRDS_CONTEXT"] = "jwst_0001.pmap"
os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_sim():
    """A small simulation used by the in-process pipeline tests (one NIRCam + one MIRI band)."""
    from jwstgal.config import SimulationConfig

    return SimulationConfig(seed=7, detector_size=256, n_dithers=2, n_tiles=1, n_stars=1500,
                            pointing_error_mas=15.0)


@pytest.fixture(scope="session")
def crds_cache(tiny_sim):
    """The session's synthetic CRDS cache, matching ``tiny_sim``."""
    from jwstgal.simulate.programme import simulated_detectors
    from jwstgal.simulate.refs import build_crds_cache

    return build_crds_cache(_SESSION_CRDS, simulated_detectors(tiny_sim, ["F200W", "F770W"]),
                            tiny_sim.seed)


@pytest.fixture(scope="session")
def tiny_raw(tiny_sim, tmp_path_factory):
    """Raw tree of the tiny simulation (target ngc0000)."""
    from jwstgal.simulate.programme import simulate_programme

    raw = tmp_path_factory.mktemp("raw")
    simulate_programme(tiny_sim, "ngc0000", ["F200W", "F770W"], raw, progress=False)
    return raw


#: The MAST token of the hostile-server tests: it must never reach another origin or a worker.
TOKEN = "t0ken-that-must-stay-home"


@pytest.fixture
def small_archive(tmp_path):
    """Three small NIRCam 'uncal' files of target NGC 0000 in proposal 9999."""
    import numpy as np
    from astropy.io import fits
    from mast_server import MastState, serve_directory_of_uncals

    files = []
    for i in range(3):
        p = tmp_path / "src" / f"jw09999001001_02101_0000{i + 1}_nrcb1_uncal.fits"
        p.parent.mkdir(exist_ok=True)
        hdr = fits.Header({"INSTRUME": "NIRCAM", "FILTER": "F200W", "PUPIL": "CLEAR"})
        fits.PrimaryHDU(np.full((32, 32), i, np.float32), hdr).writeto(p)
        files.append(p)
    state = MastState()
    serve_directory_of_uncals(state, files, target_name="NGC-0000", proposal_id="9999", ra=1.0, dec=2.0)
    state.tokens.add(TOKEN)
    return state
