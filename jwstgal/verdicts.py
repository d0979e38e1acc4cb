"""One verdict per band for the QA page: ``ok``, ``check`` or ``failed``, with the reasons in words.

:func:`band_verdict` is a pure function of what is known about a band (:class:`BandFacts`) and the
limits of the ``[qa]`` table (:class:`QaLimits`): a band whose reduction failed is ``failed``; one
with an unsafe kernel, an alignment beyond its limits, an anchoring that failed or is too
uncertain, a configured step skipped for want of input, stripes left after destriping, a level
matching with rejected overlaps or unmatched exposures, a borrowed alignment that its own stars
disagree with, or a rung that could not be convolved is ``check``; anything else is ``ok``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import Field

from jwstgal.settings import Strict

#: Verdicts, worst last.
VERDICTS = ("ok", "check", "failed")


class QaLimits(Strict):
    """The ``[qa]`` table: when the QA page asks for a look (``check``)."""

    max_kernel_wminus: float = Field(0.5, gt=0, description="Largest Aniano W- (total negative "
                                     "weight) of a band's kernels; 0.5 is Aniano et al.'s 'unsafe'.")
    max_alignment_rms_mas: float = Field(30.0, gt=0, description="Largest rms (mas) of the absolute "
                                         "alignment's residuals.")
    max_alignment_shift_mas: float = Field(1000.0, gt=0, description="Largest absolute-alignment "
                                           "shift (mas) before it is worth a look.")
    min_alignment_matches: int = Field(5, ge=1, description="Fewest matched stars of an alignment "
                                       "solved on the band itself.")
    max_anchor_error: float = Field(0.05, gt=0, description="Largest 1-sigma error (MJy/sr) of a "
                                    "band's background offset.")
    max_anchor_error_frac: float = Field(0.25, gt=0, description="Largest 1-sigma error of a band's "
                                         "background offset as a fraction of its faint sky after "
                                         "anchoring (10th percentile of the fitted pixels): the "
                                         "same limit for faint and bright bands.")
    max_borrowed_offset_mas: float = Field(30.0, gt=0, description="Largest median offset (mas) of "
                                           "a band's own stars from the reference after a borrowed "
                                           "alignment.")
    max_stripe_residual: float = Field(2.0, gt=0, description="Largest stripe residual of a "
                                       "destriped exposure: rms of its row/column medians over what "
                                       "pixel noise alone gives (1 = no stripes left).")
    max_level_rejected_frac: float = Field(0.25, ge=0, le=1, description="Largest fraction of "
                                           "overlaps rejected as outliers by the level matching.")
    max_ladder_fwhm_error: float = Field(0.01, gt=0, description="Largest relative difference of "
                                         "the stars' FWHM in a rung product from the rung PSF's "
                                         "(beyond twice its error, with at least 3 stars).")


@dataclass
class BandFacts:
    """What the QA page knows about one band (NaN or empty where it does not)."""

    error: str = ""
    failed_steps: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)     # configured, but no input to run on
    kernel_wminus: dict[str, float] = field(default_factory=dict)   # kernel target -> W-
    alignment_shift_mas: float = math.nan
    alignment_rms_mas: float = math.nan
    alignment_matches: int = 0
    alignment_borrowed: str = ""
    anchor_status: str = ""
    anchor_error: float = math.nan
    anchor_sky: float = math.nan
    failed_rungs: list[str] = field(default_factory=list)
    borrowed_own_stars: int = 0                  # own stars matched after a borrowed alignment
    borrowed_offset_mas: float = math.nan        # their median offset from the reference
    stripe_residual: float = math.nan            # worst destriped exposure (1 = noise only)
    stripe_residual_file: str = ""
    level_pairs: int = 0                         # overlaps used by the level matching
    level_rejected: int = 0                      # overlaps it rejected as outliers
    level_isolated: int = 0                      # exposures that overlap no other
    ladder_widths: dict[str, dict] = field(default_factory=dict)  # rung -> stars' FWHM vs its PSF


def band_verdict(facts: BandFacts, limits: QaLimits) -> tuple[str, list[str]]:
    """The band's verdict and its reasons (empty for ``ok``), each reason with its unit."""
    failed, check = [], []
    if facts.error:
        failed.append(f"reduction failed: {facts.error}")
    failed += [f"step {s} failed" for s in facts.failed_steps]
    check += [f"step {s} skipped: no input" for s in facts.skipped_steps]
    for target, wm in sorted(facts.kernel_wminus.items()):
        if wm > limits.max_kernel_wminus:
            how = "very unsafe" if wm > 1.0 else "unsafe"
            check.append(f"kernel to {target} {how}: W- = {wm:.2f} > {limits.max_kernel_wminus:g}")
    rms, shift = facts.alignment_rms_mas, facts.alignment_shift_mas
    if math.isfinite(rms) and rms > limits.max_alignment_rms_mas:
        check.append(f"alignment rms {rms:.1f} mas > {limits.max_alignment_rms_mas:g} mas")
    if math.isfinite(shift) and shift > limits.max_alignment_shift_mas:
        check.append(f"alignment shift {shift:.0f} mas > {limits.max_alignment_shift_mas:g} mas")
    if (math.isfinite(rms) and not facts.alignment_borrowed
            and facts.alignment_matches < limits.min_alignment_matches):
        check.append(f"alignment on {facts.alignment_matches} stars < {limits.min_alignment_matches}")
    if (facts.alignment_borrowed and math.isfinite(facts.borrowed_offset_mas)
            and facts.borrowed_own_stars >= limits.min_alignment_matches
            and facts.borrowed_offset_mas > limits.max_borrowed_offset_mas):
        check.append(f"borrowed alignment ({facts.alignment_borrowed}) off by "
                     f"{facts.borrowed_offset_mas:.0f} mas on the band's own {facts.borrowed_own_stars} "
                     f"stars > {limits.max_borrowed_offset_mas:g} mas")
    if math.isfinite(facts.stripe_residual) and facts.stripe_residual > limits.max_stripe_residual:
        check.append(f"stripes left after destriping: residual {facts.stripe_residual:.1f} x noise "
                     f"> {limits.max_stripe_residual:g} ({facts.stripe_residual_file})")
    tried = facts.level_pairs + facts.level_rejected
    if tried and facts.level_rejected / tried > limits.max_level_rejected_frac:
        check.append(f"level matching rejected {facts.level_rejected} of {tried} overlaps "
                     f"({100 * facts.level_rejected / tried:.0f} % > "
                     f"{100 * limits.max_level_rejected_frac:g} %)")
    if facts.level_isolated:
        check.append(f"level matching: {facts.level_isolated} exposure(s) overlap no other "
                     "(levels not matched)")
    if facts.anchor_status.startswith("not anchored"):
        check.append(facts.anchor_status)
    elif math.isfinite(facts.anchor_error) and facts.anchor_error > limits.max_anchor_error:
        check.append(f"background offset error {facts.anchor_error:.3f} MJy/sr > "
                     f"{limits.max_anchor_error:g} MJy/sr")
    elif (math.isfinite(facts.anchor_error) and math.isfinite(facts.anchor_sky)
          and facts.anchor_error > limits.max_anchor_error_frac * abs(facts.anchor_sky)):
        check.append(f"background offset error {facts.anchor_error:.3g} MJy/sr is "
                     f"{100 * facts.anchor_error / max(abs(facts.anchor_sky), 1e-30):.0f} % of the band's "
                     f"faint sky ({facts.anchor_sky:.3g} MJy/sr) > {100 * limits.max_anchor_error_frac:g} %")
    check += [f"rung not convolved: {r}" for r in facts.failed_rungs]
    for rung, w in sorted(facts.ladder_widths.items()):
        ratio, err = w.get("ratio"), w.get("ratio_err") or 0.0
        if (ratio is not None and w.get("n", 0) >= 3
                and abs(ratio - 1) - 2 * err > limits.max_ladder_fwhm_error):
            limit = 100 * limits.max_ladder_fwhm_error
            check.append(f"stars at the {rung} rung are {100 * (ratio - 1):+.1f} % wider than its PSF "
                         f"(± {100 * err:.1f} %, {w['n']} stars; limit {limit:g} %)")
    if failed:
        return "failed", failed + check
    return ("check", check) if check else ("ok", [])
