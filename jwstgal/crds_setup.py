"""Point CRDS at the right place before jwst is imported, and turn CRDS failures into clear errors.

CRDS reads its environment once per process and reports fatal problems by raising ``SystemExit``,
which ``except Exception`` does not catch. Every pipeline call therefore runs inside
:func:`crds_guard`, and :func:`configure_crds` must run before the first ``import jwst``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jwstgal.errors import CRDSError

log = logging.getLogger(__name__)

#: Placeholder URL that makes CRDS use only its local cache.
SERVERLESS_URL = "https://crds-serverless-mode.stsci.edu"


def configure_crds(
    crds_dir: str | os.PathLike[str],
    *,
    mode: str = "remote",
    server_url: str = "https://jwst-crds.stsci.edu",
    context: str = "",
    create: bool = True,
) -> dict[str, str]:
    """Set the CRDS environment variables for this process (and the workers it starts).

    Parameters
    ----------
    crds_dir : path-like
        CRDS cache directory (``CRDS_PATH``); created if missing (see ``create``).
    mode : {"remote", "synthetic"}
        ``remote`` uses the STScI server and caches into ``crds_dir``; ``synthetic`` uses only the
        local cache built by :func:`jwstgal.simulate.refs.build_crds_cache` and disables the
        parameter-reference (``pars-*``) lookups that have no synthetic counterpart.
    server_url : str
        CRDS server for ``remote`` mode.
    context : str
        A ``.pmap`` context to pin, or '' for the server's operational context.
    create : bool
        Create ``crds_dir`` now (False: the caller creates it once it may write).

    Returns
    -------
    dict
        The variables that were set.

    Raises
    ------
    CRDSError
        If CRDS was already imported in this process with a different cache (CRDS cannot be
        re-pointed once it has read its configuration).
    """
    crds_dir = Path(crds_dir).resolve()
    if create:
        crds_dir.mkdir(parents=True, exist_ok=True)
    env = {"CRDS_PATH": str(crds_dir)}
    if mode == "synthetic":
        env["CRDS_SERVER_URL"] = SERVERLESS_URL
        env["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"
        env["CRDS_CONTEXT"] = context or "jwst_0001.pmap"
    else:
        env["CRDS_SERVER_URL"] = server_url
        if "pmap" in context:
            env["CRDS_CONTEXT"] = context
    if "crds" in sys.modules and os.environ.get("CRDS_PATH") not in (None, env["CRDS_PATH"]):
        msg = (f"CRDS is already configured in this process for {os.environ['CRDS_PATH']!r}; it "
               f"cannot be re-pointed to {env['CRDS_PATH']!r}. Run one configuration per process.")
        raise CRDSError(msg)
    os.environ.update(env)
    if mode != "synthetic":
        os.environ.pop("STPIPE_DISABLE_CRDS_STEPPARS", None)
    log.debug("CRDS environment: %s", env)
    return env


@contextlib.contextmanager
def crds_guard(what: str) -> Iterator[None]:
    """Convert CRDS's ``SystemExit`` and its exceptions into :class:`CRDSError`.

    Parameters
    ----------
    what : str
        What was being done (named in the error), e.g. ``"stage 1 of jw..._uncal.fits"``.
    """
    try:
        yield
    except SystemExit as err:
        msg = (f"CRDS failed during {what} (SystemExit {err.code}). Check CRDS_PATH="
               f"{os.environ.get('CRDS_PATH')!r} and the network, or use crds_mode = 'synthetic' "
               "in local.toml for simulated data.")
        raise CRDSError(msg) from None
    except Exception as err:
        if type(err).__module__.startswith("crds"):
            msg = f"CRDS failed during {what}: {type(err).__name__}: {err}"
            raise CRDSError(msg) from err
        raise


def import_jwst_pipelines() -> dict[str, Any]:
    """Import and return the jwst pipeline classes (the single place the suite imports them)."""
    with crds_guard("import of the jwst pipelines"):
        from jwst.pipeline import Detector1Pipeline, Image2Pipeline, Image3Pipeline
        from jwst.resample import ResampleStep
        from jwst.skymatch import SkyMatchStep
        from jwst.tweakreg import TweakRegStep
    return {
        "Detector1Pipeline": Detector1Pipeline,
        "Image2Pipeline": Image2Pipeline,
        "Image3Pipeline": Image3Pipeline,
        "ResampleStep": ResampleStep,
        "SkyMatchStep": SkyMatchStep,
        "TweakRegStep": TweakRegStep,
    }
