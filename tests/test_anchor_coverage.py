"""Anchoring's errors cover the truth: 40 simulated cases of bands that are not scaled copies.

Each case (:func:`jwstgal.simulate.colours.anchor_case`) draws a galaxy, a field that may or may not
reach its outskirts, colours, zero points, a calibration slope and noise. The reference band is
anchored to an external map, the other band chained to it, with the shipped ``[anchor]`` defaults.
1-sigma errors should hold the truth in 55-80 % of cases, 2-sigma ones in at least 90 %.
"""

import numpy as np
import pytest

from jwstgal.anchor import estimate_offset
from jwstgal.config.products import AnchorConfig
from jwstgal.simulate.colours import anchor_case

CASES = 40


@pytest.fixture(scope="module")
def results():
    a = AnchorConfig()
    kw = {"degree": 2 if a.colour_term else 1, "regions": a.regions, "x_range": a.fit_range,
              "n_bins": a.n_bins, "min_per_bin": a.min_per_bin, "clip_sigma": a.clip_sigma}
    out = {"reference": [], "chained": []}
    for seed in range(CASES):
        case = anchor_case(seed)
        ref = estimate_offset(case.external, case.reference, **kw)
        band = estimate_offset(case.reference, case.band, offset_ref=ref.offset,
                               offset_ref_err=ref.err, **kw)
        # what the errors were before the systematic term: statistical all along the chain
        stat_only = estimate_offset(case.reference, case.band, offset_ref=ref.offset,
                                    offset_ref_err=ref.stat_err, **kw).stat_err
        out["reference"].append((ref, case.truth_reference, ref.stat_err))
        out["chained"].append((band, case.truth_band, stat_only))
    return out


@pytest.mark.pipeline
def test_the_cases_are_not_scaled_copies():
    """The band's ratio to the reference changes across the field by more than 10 % in most cases."""
    changing = 0
    for seed in range(CASES):
        c = anchor_case(seed)
        bright = c.sky_reference > np.percentile(c.sky_reference, 50)
        ratio = (c.band + c.truth_band)[bright] / c.sky_reference[bright]
        changing += np.percentile(ratio, 90) / np.percentile(ratio, 10) > 1.1
    assert changing >= 0.8 * CASES


@pytest.mark.pipeline
@pytest.mark.parametrize("kind", ["reference", "chained"])
def test_quoted_errors_cover_the_truth(results, kind):
    z = np.array([abs(e.offset - t) / e.err for e, t, _ in results[kind]])
    assert 0.55 <= np.mean(z < 1) <= 0.80, f"1-sigma coverage {np.mean(z < 1):.2f}"
    assert np.mean(z < 2) >= 0.90, f"2-sigma coverage {np.mean(z < 2):.2f}"


@pytest.mark.parametrize("kind", ["reference", "chained"])
def test_statistical_errors_alone_would_not(results, kind):
    """Without the sub-region spread the errors are far too small (the bias the colours make)."""
    z = np.array([abs(e.offset - t) / stat for e, t, stat in results[kind]])
    assert np.mean(z < 1) < 0.4 and np.mean(z < 2) < 0.6
    assert all(np.isfinite(e.sys_err) for e, _, _ in results[kind])
