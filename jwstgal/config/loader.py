"""Load and validate the two TOML files of a run: the science config and the machine config.

Everything is validated before any work starts. A problem is reported as one :class:`ConfigError`
whose lines each name the file, the dotted key, the value, what is allowed and, for a misspelling, a
"did you mean".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from jwstgal.config.jwst import check_jwst_parameters
from jwstgal.config.local import LocalConfig, LocalFile
from jwstgal.config.messages import format_errors
from jwstgal.config.science import ScienceConfig
from jwstgal.data import checkout_root, data_path
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class RunConfig(BaseModel):
    """A validated run: both configs plus resolved absolute paths.

    Attributes
    ----------
    science : ScienceConfig
        The science configuration.
    local : LocalConfig
        The machine configuration.
    config_path, local_path : pathlib.Path
        Files the configuration came from.
    raw_dir, working_dir, crds_dir, alignment_dir, reprocess_dir : pathlib.Path
        Absolute directories; relative paths in ``local.toml`` are relative to that file.
    config_hash : str
        Short hash of the validated science configuration (recorded in every product).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    science: ScienceConfig
    local: LocalConfig
    config_path: Path
    local_path: Path
    raw_dir: Path
    working_dir: Path
    crds_dir: Path
    alignment_dir: Path
    psf_dir: Path
    psf_data_dir: Path
    config_hash: str
    anchor_ref_dir: Path | None = None

    @property
    def reprocess_dir(self) -> Path:
        """``<working_dir>/jwst_lv3_reprocessed_<data_version>``."""
        return self.working_dir / f"jwst_lv3_reprocessed_{self.science.pipeline.data_version}"

    @property
    def release_dir(self) -> Path:
        """``<working_dir>/jwst_release/<data_version>``."""
        return self.working_dir / "jwst_release" / self.science.pipeline.data_version

    def released_config(self) -> dict[str, Any]:
        """The resolved configuration of the run, as released (``run_config.json``).

        Secrets and this machine's folders are left out (``local``'s paths, the Slurm set-up, the
        scheduler address), and any absolute path left is reduced to its last component: a
        release says how it was made, not where.
        """
        from jwstgal.config.messages import SECRET_KEYS
        from jwstgal.provenance import software_versions

        machine = {"slurm", "dask_scheduler", "mast_server"}
        local = {k: v for k, v in self.local.model_dump(mode="json").items()
                 if k not in SECRET_KEYS and k not in machine and not k.endswith("_dir")}
        return _no_machine_paths({"config_file": self.config_path.name, "config_hash": self.config_hash,
                                  "versions": software_versions(),
                                  "science": self.science.model_dump(mode="json"), "local": local})


def _no_machine_paths(obj: Any) -> Any:
    """``obj`` with every absolute path string reduced to its last component."""
    from pathlib import PurePosixPath, PureWindowsPath

    if isinstance(obj, dict):
        return {k: _no_machine_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_machine_paths(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or PureWindowsPath(obj).drive):
        return PurePosixPath(obj.replace("\\", "/")).name
    return obj


#: Largest config file read (a config is a few kB; anything this size is not one).
MAX_CONFIG_BYTES = 4 * 2**20


def _read_toml(path: Path) -> dict[str, Any]:
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        msg = (f"{path}: config file not found (give its path, or write the examples with "
               "`jwstgal init` and edit them)")
        raise ConfigError(msg) from None
    if not stat.S_ISREG(mode):          # a FIFO would block the read, a device never end it
        msg = f"{path}: not a regular file; a config is a TOML text file"
        raise ConfigError(msg)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        msg = (f"{path}: {path.stat().st_size} bytes is too large for a config file "
               f"(at most {MAX_CONFIG_BYTES})")
        raise ConfigError(msg)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        msg = f"{path}: not valid TOML: {err}"
        raise ConfigError(msg) from None
    except RecursionError:
        msg = f"{path}: not valid TOML here: arrays or tables nested too deeply"
        raise ConfigError(msg) from None
    except UnicodeDecodeError as err:
        msg = f"{path}: not a text file in UTF-8 (byte {err.start}: {err.reason}); TOML is UTF-8 text"
        raise ConfigError(msg) from None
    except OSError as err:
        msg = f"{path}: cannot read the config file ({err.strerror or err})"
        raise ConfigError(msg) from None


def validate_science(data: dict[str, Any], path: Path) -> ScienceConfig:
    """Validate a parsed science config.

    Parameters
    ----------
    data : dict
        Parsed TOML.
    path : pathlib.Path
        File it came from (named in every error).

    Returns
    -------
    ScienceConfig

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    try:
        cfg = ScienceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, path, ScienceConfig)) from None
    if not cfg.bands:
        msg = f"{path}: key 'pipeline.nircam_bands' / 'pipeline.miri_bands': no band to process"
        raise ConfigError(msg)
    return cfg


def load_science(path: str | os.PathLike[str]) -> ScienceConfig:
    """Read and validate a science config alone (for tools that need no machine paths).

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or invalid.
    """
    return validate_science(_read_toml(Path(path)), Path(path))


def load_local(path: str | os.PathLike[str]) -> LocalConfig:
    """Read and validate a machine config (``local.toml``) alone.

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or invalid.
    """
    try:
        return LocalFile.model_validate(_read_toml(Path(path))).local
    except ValidationError as err:
        raise ConfigError(format_errors(err, Path(path), LocalFile)) from None


def load_config(
    config_path: str | os.PathLike[str],
    local_path: str | os.PathLike[str] | None = None,
    *,
    check_jwst: bool = True,
) -> RunConfig:
    """Load and validate a run's configuration.

    Parameters
    ----------
    config_path : path-like
        The science config (``config/config.toml``).
    local_path : path-like, optional
        The machine config; defaults to ``local.toml`` beside ``config_path``.
    check_jwst : bool
        Also check every ``lvN_parameters`` key against the jwst step specs (imports jwst).

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        If either file is missing, is not TOML or does not validate.
    """
    config_path = Path(config_path).resolve()
    local_path = Path(local_path).resolve() if local_path else config_path.parent / "local.toml"
    problems: list[str] = []                 # every file's problems in one message
    science = local = None
    try:
        science = validate_science(_read_toml(config_path), config_path)
    except ConfigError as err:
        problems.append(str(err))
    try:
        local = load_local(local_path)
    except ConfigError as err:
        problems.append(str(err))
    if check_jwst and science is not None:
        try:
            check_jwst_parameters(science, config_path)
        except ConfigError as err:
            problems.append(str(err))
    if problems or science is None or local is None:
        raise ConfigError("\n".join(problems))

    base = local_path.parent

    def absolute(p: str, default: Path) -> Path:
        return (base / p).resolve() if p else default.resolve()

    working = absolute(local.working_dir, base)
    if working.exists() and not working.is_dir():
        msg = f"{local_path}: key 'local.working_dir': {working} is a file, not a folder"
        raise ConfigError(msg)
    raw = absolute(local.raw_dir, base)
    if working == raw or raw in working.parents:
        msg = (f"{local_path}: key 'local.working_dir': {working} is inside raw_dir {raw}; raw data are "
               "never written to, so the products must go to a folder outside it")
        raise ConfigError(msg)
    if why := _unwritable(working):
        msg = f"{local_path}: key 'local.working_dir': {working} {why}"
        raise ConfigError(msg)
    # a simulation writes its own reference catalogue: into the working tree unless told otherwise
    default_alignment = working / "alignment" if science.simulation is not None else data_path("alignment")
    return RunConfig(
        science=science,
        local=local,
        config_path=config_path,
        local_path=local_path,
        raw_dir=raw,
        working_dir=working,
        crds_dir=absolute(local.crds_dir, working / "crds"),
        alignment_dir=absolute(local.alignment_dir, default_alignment),
        psf_dir=absolute(local.psf_dir, REPO_ROOT / "PSF" if checkout_root() else working / "psf"),
        psf_data_dir=absolute(local.psf_data_dir, data_path("stpsf_data")),
        config_hash=config_hash(science),
        anchor_ref_dir=(base / local.anchor_ref_dir).resolve() if local.anchor_ref_dir else None,
    )


def _unwritable(folder: Path) -> str:
    """Why outputs cannot be created in ``folder`` ('' if they can).

    Checked on the folder or its nearest existing parent, before anything is written.
    """
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot be created: {probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "is" if probe == folder else f"cannot be created: {probe}"
        return f"{where} not writable by this user"
    return ""


#: Tables and keys added after configs were hashed: left out while they hold their defaults, so a
#: config keeps its hash (and a product's ``JGAL_CFG`` still names its config) across upgrades.
ADDED_KEYS: tuple[tuple[str, ...], ...] = (
    ("rate_destripe",), ("rate_bg_sub",), ("astrometric_align", "mapping_mode"),
    ("release", "include_alignment"),
    ("release", "include_fields"), ("release", "include_backgrounds"), ("release", "include_qa"),
    ("release", "naming"), ("release", "hlsp_project"), ("anchor", "colour_term"), ("anchor", "regions"),
    ("kernels", "psf_files"), ("kernels", "ote_wfe_nm"), ("simulation", "psf"), ("kernels", "pixel_response"),
)


def config_hash(science: ScienceConfig) -> str:
    """Short SHA-256 of the validated science config (stable across key order)."""
    # the QA page's limits change no product: they are left out (configs keep their hash)
    dump = science.model_dump(mode="json", exclude={"qa"})
    for path in ADDED_KEYS:
        owner, model = dump, science
        for key in path[:-1]:
            owner, model = owner[key], getattr(model, key)
        if owner is None:           # an optional table left out ([simulation])
            continue
        field = type(model).model_fields[path[-1]]
        default = field.get_default(call_default_factory=True)
        if hasattr(default, "model_dump"):
            default = default.model_dump(mode="json")
        if owner.get(path[-1]) == default:
            del owner[path[-1]]
    for maps in (dump.get("anchor", {}).get("external") or {}).values():
        for m in maps:          # an external map's bands, added later, kept out at their default
            if m.get("bands") == []:
                del m["bands"]
    blob = json.dumps(dump, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
