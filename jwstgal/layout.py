"""Where every product lives: the one place that names folders and files of a reduction.

::

    <working_dir>/jwst_lv3_reprocessed_<data_version>/<target>/<BAND>/
        rate/   cal/                     stages 1 and 2 (named after their products)
        <step>/                          every other step (destripe/, level_match/, lv3/, ...)
        convolved/<product>_i2d_conv_<PSF>.fits
        anchor/<product>_i2d_anchor.fits      anchored mosaic (anchor_data.py)
        qa/                              diagnostics of the band's steps
        .jwstgal/<step>.json             step records, .jwstgal/lock
    <working_dir>/jwst_lv3_reprocessed_<data_version>/<target>/anchor/  anchoring table and plots
    <psf_dir>/kernels/<method>/<SOURCE>_to_<TARGET>.fits

The release, the convolution, the QA page and the steps import their paths from here.
"""

from __future__ import annotations

from pathlib import Path

from jwstgal.bands import Band

#: Folders of the steps whose folder is not the step's name (stages 1 and 2 are named after their
#: products, as the jwst pipeline names the files).
_PRODUCT_FOLDERS = {"lv1": "rate", "lv2": "cal"}


def step_folder(step: str) -> str:
    """Folder (inside a band folder) of a step's products."""
    return _PRODUCT_FOLDERS.get(step, step)


def band_dir(reprocess_dir: Path, target: str, band: Band | str) -> Path:
    """``<reprocess_dir>/<target>/<BAND>``."""
    return reprocess_dir / target / (band if isinstance(band, str) else band.name)


def record_dir(band_folder: Path) -> Path:
    """Folder of a band's step records and lock."""
    return band_folder / ".jwstgal"


def rung_failures(band_folder: Path) -> Path:
    """The rungs of the ladder the last convolution could not make, and why (JSON list)."""
    return band_folder / "qa" / "convolve_failures.json"


def ladder_widths(band_folder: Path) -> Path:
    """The stars' FWHM in each rung product against the rung's PSF (JSON, :mod:`jwstgal.ladder_qa`)."""
    return band_folder / "qa" / "ladder_widths.json"


def run_qa_dir(reprocess_dir: Path) -> Path:
    """Folder of the run's QA page (``index.html``) and its record of the last run."""
    return reprocess_dir / "qa"


def release_qa_dir(release_target_dir: Path, band: str) -> Path:
    """Where a release holds a band's QA figures (``<release>/<target>/qa/<BAND>/``)."""
    return release_target_dir / "qa" / band


def qa_dir(band_folder: Path) -> Path:
    """Folder of a band's diagnostics."""
    return band_folder / "qa"


def product_name(target: str, band: Band) -> str:
    """Level-3 product name, ``<target>_<nircam|miri>_lv3_<band>``."""
    return f"{target}_{band.instrument}_lv3_{band.name.lower()}"


def stage3_mosaic(band_folder: Path, target: str, band: Band) -> Path:
    """Stage 3's mosaic of a band."""
    return band_folder / step_folder("lv3") / f"{product_name(target, band)}_i2d.fits"


def stage3_catalog(band_folder: Path, target: str, band: Band) -> Path:
    """Stage 3's source catalogue of a band."""
    return band_folder / step_folder("lv3") / f"{product_name(target, band)}_cat.ecsv"


def astro_catalog(band_folder: Path, target: str, band: Band) -> Path:
    """The ``astrometric_catalog`` step's point sources of a band's mosaic."""
    return band_folder / step_folder("astrometric_catalog") / f"{product_name(target, band)}_astro_cat.fits"


def align_table(band_folder: Path, target: str, band: Band) -> Path:
    """The matched stars of a band's absolute alignment."""
    name = f"{product_name(target, band)}_i2d_align_table.fits"
    return band_folder / step_folder("astrometric_align") / name


def quicklook(band_folder: Path, target: str, band: Band) -> Path:
    """PNG quicklook of stage 3's mosaic."""
    return stage3_mosaic(band_folder, target, band).with_suffix(".png")


def aligned_mosaic(band_folder: Path, target: str, band: Band) -> Path:
    """The astrometrically aligned mosaic of a band (``astrometric_align`` step)."""
    return (band_folder / step_folder("astrometric_align")
            / f"{product_name(target, band)}_i2d_align.fits")


def final_mosaic(band_folder: Path, target: str, band: Band) -> Path:
    """The band's final mosaic: the astrometrically aligned one if it exists, else stage 3's."""
    aligned = aligned_mosaic(band_folder, target, band)
    return aligned if aligned.is_file() else stage3_mosaic(band_folder, target, band)


def convolved_dir(band_folder: Path) -> Path:
    """Folder of a band's convolved mosaics."""
    return band_folder / "convolved"


def convolved_mosaic(band_folder: Path, target: str, band: Band, psf: str) -> Path:
    """A band's final mosaic convolved to ``psf`` (a band or an analytic PSF name)."""
    return convolved_dir(band_folder) / f"{product_name(target, band)}_i2d_conv_{psf}.fits"


def kernel_path(psf_dir: Path, method: str, source: str, target: str) -> Path:
    """Where the kernel from ``source`` to ``target`` made by ``method`` lives."""
    return psf_dir / "kernels" / method / f"{source}_to_{target}.fits"


def cached_kernel_path(psf_dir: Path, method: str, source: str, target: str, key: str) -> Path:
    """A kernel kept by its key (its PSFs and settings), so that going back to them costs nothing."""
    return psf_dir / "kernels" / ".cache" / method / f"{source}_to_{target}-{key}.fits"


def psf_path(psf_dir: Path, band: str) -> Path:
    """Where a band's PSF lives (make_kernels.py writes it; kernels are built from it)."""
    return psf_dir / "psfs" / f"{band}.fits"


def optics_psf_path(psf_dir: Path, band: str) -> Path:
    """A band's PSF without its mosaics' pixel response (``[kernels] pixel_response``), cached."""
    return psf_dir / "psfs" / "optics" / f"{band}.fits"


def empirical_psf_path(psf_dir: Path, name: str) -> Path:
    """A user's empirical PSF file (``[kernels] psf_files``): ``<psf_dir>/empirical/<name>``."""
    return psf_dir / "empirical" / name


def kernel_source_psf(kernel_file: Path, source: str) -> Path:
    """The PSF a kernel at :func:`kernel_path` was built from (``source``: its ``KSOURCE``)."""
    return psf_path(kernel_file.parent.parent.parent, source)


def anchored_mosaic(band_folder: Path, target: str, band: Band) -> Path:
    """The band's final mosaic with its background anchored (``anchor_data.py``)."""
    return band_folder / "anchor" / f"{product_name(target, band)}_i2d_anchor.fits"


def published_mosaic(band_folder: Path, target: str, band: Band) -> Path:
    """What the ladder convolves: the anchored mosaic when it is at least as new as the final one."""
    final = final_mosaic(band_folder, target, band)
    anchored = anchored_mosaic(band_folder, target, band)
    if anchored.is_file() and (not final.is_file() or anchored.stat().st_mtime >= final.stat().st_mtime):
        return anchored
    return final


def anchor_table(reprocess_dir: Path, target: str) -> Path:
    """One target's anchoring table (every band's fit and offset)."""
    return reprocess_dir / target / "anchor" / f"{target}_anchor.ecsv"


def anchor_truth(reprocess_dir: Path, target: str) -> Path:
    """A simulated target's anchoring against the simulation's truth (the QA page shows it)."""
    return reprocess_dir / target / "anchor" / f"{target}_anchor_truth.json"


def anchor_plot(reprocess_dir: Path, target: str, band: str, reference: str) -> Path:
    """Scatter plot of one anchoring fit."""
    return reprocess_dir / target / "anchor" / f"{target}_{band}_vs_{reference}.png"


def not_a_regular_file(path: Path) -> str:
    """Why ``path`` must not be opened as a data file ('' if it may).

    Only regular files are read (links are followed to what they name): a FIFO would block the
    reader for ever and a device (a link to ``/dev/zero``) would be read without end.
    """
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        return f"{kind}, not a regular file"
    return ""
