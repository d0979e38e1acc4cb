"""MAST queries and resumable, verified downloads through astroquery.mast.

Selection is pure (:func:`select_observations`, :func:`select_products` work on astropy tables);
:class:`MastArchive` does the network work with astroquery's ``ObservationsClass`` (portal queries,
``get_product_list``) and its session: token login and transfers resumed with HTTP ``Range``. Files
arrive as ``<name>.part`` and are renamed only once complete and verified: their size must be what
MAST reports and, for FITS files carrying ``CHECKSUM``/``DATASUM`` cards, the checksums must hold; a
corrupt file is fetched again from the start. Transient errors (connection resets, broken streams,
timeouts, HTTP 5xx) are retried with exponential backoff.

What the server says is not trusted: every ``obs_id`` and ``productFilename`` must be a plain file
name of the kind MAST issues (:func:`safe_name`) before anything is written. The token, redirects,
size caps and rates are :mod:`jwstgal.mast_transfer`'s. One file that fails does not stop the
others, and the manifest lists what arrived.

Layout: ``<dest>/mastDownload/JWST/<obs_id>/<file>``, astroquery's, which the reprocessing reads.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from jwstgal.errors import DownloadError, NetworkError
from jwstgal.mast_products import (
    PRODUCT_SUFFIXES,
    SIZE_MARGIN,
    DownloadPlan,
    name_key,
    product_path,
    safe_name,
    select_observations,
    select_products,
    verify_file,
)
from jwstgal.mast_transfer import (
    MAX_REDIRECTS,
    BadRedirect,
    OriginToken,
    TooLong,
    TooSlow,
    get_following_redirects,
    origin,
    stream_into,
)
from jwstgal.provenance import atomic_path

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://mast.stsci.edu"
INSTRUMENT_MODES = {"nircam": "NIRCAM/IMAGE", "miri": "MIRI/IMAGE"}

__all__ = ["DEFAULT_SERVER", "INSTRUMENT_MODES", "MAX_REDIRECTS", "PRODUCT_SUFFIXES", "SIZE_MARGIN",
           "DownloadPlan", "MastArchive", "name_key", "plan_config_downloads", "product_path", "safe_name",
           "select_observations", "select_products", "verify_file"]

class MastArchive:
    """astroquery.mast ``Observations`` bound to one server, optionally logged in.

    Parameters
    ----------
    server : str
        MAST portal URL (``https://mast.stsci.edu``; a mirror or a test server may stand in).
    token : str, optional
        MAST API token (never logged); exclusive-access data need one.
    retries : int
        Retries of one file on transient errors.
    backoff : float
        First retry delay in seconds; it doubles each time.
    connect_timeout, read_timeout : float
        Seconds to wait for a connection, and for each block of a response (a stalled transfer is
        retried like a broken one).
    max_bytes : int
        Largest file accepted, whatever MAST lists: a body past it is cut off and its ``.part``
        deleted; a listed size above it is refused without a transfer.
    min_rate : float
        Bytes per second a transfer must keep up over each ``rate_window`` (0: no minimum); a slower
        one is dropped and resumed like a broken one.
    rate_window : float
        Seconds over which the rate is measured.

    Raises
    ------
    NetworkError
        If the server cannot be reached while logging in.
    DownloadError
        If MAST rejects the token.
    """

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, *, retries: int = 5,
                 backoff: float = 2.0, connect_timeout: float = 30.0, read_timeout: float = 120.0,
                 max_bytes: int = 16 * 2**30, min_rate: float = 1024.0, rate_window: float = 120.0
                 ) -> None:
        from urllib.parse import urlparse

        from astroquery.mast import ObservationsClass

        self.server = server.rstrip("/")
        self.host = urlparse(self.server).hostname or ""
        self.retries = retries
        self.backoff = backoff
        self.timeout = (connect_timeout, read_timeout)
        self.max_bytes = int(max_bytes)
        self.min_rate = float(min_rate)
        self.rate_window = float(rate_window)
        self.obs = ObservationsClass()
        portal = self.obs._portal_api_connection
        portal.MAST_REQUEST_URL = self.server + "/api/v0/invoke"
        portal.COLUMNS_CONFIG_URL = self.server + "/portal/Mashup/Mashup.asmx/columnsconfig"
        portal.MAST_DOWNLOAD_URL = self.server + "/api/v0.1/Download/file"
        portal.MAST_BUNDLE_URL = self.server + "/api/v0.1/Download/bundle"
        if token:
            self._login(token)

    def _login(self, token: str) -> None:
        """Bind the token to the MAST origin, then check it at ``/whoami``.

        A redirect within the MAST origin is followed (the token goes along); one to any other
        origin is refused, never followed.
        """
        from urllib.parse import urljoin

        session = self.obs._session
        session.auth = OriginToken(token, self.server)   # before the first request that carries it
        url = self.server + "/whoami"
        for _ in range(MAX_REDIRECTS + 1):
            with self._network("logging in"):
                resp = session.get(url, headers={"Accept": "application/json"}, allow_redirects=False,
                                   timeout=self.timeout)
            if not resp.is_redirect:
                break
            resp.close()
            url = urljoin(url, resp.headers.get("Location", ""))
            if origin(url) != origin(self.server):
                where = "://".join(origin(url)[:2])
                msg = (f"MAST's login check at {self.server}/whoami redirected to {where}; not "
                       "following it with the API token. Check [local] mast_server")
                raise DownloadError(msg)
        with resp:
            try:
                info = resp.json() if resp.status_code == 200 else {}
            except ValueError:
                info = {}
        if not isinstance(info, dict) or "anon" not in info:
            msg = (f"MAST at {self.server} did not answer the login check (HTTP {resp.status_code} from "
                   "/whoami); check [local] mast_server")
            raise DownloadError(msg)
        if info["anon"]:
            msg = (f"MAST at {self.server} rejected the API token (from [local] api_key or "
                   "$MAST_API_TOKEN; not shown). Make a new one at https://auth.mast.stsci.edu/token "
                   "and put it in config/local.toml")
            raise DownloadError(msg)

    @contextlib.contextmanager
    def _network(self, what: str) -> Iterator[None]:
        """Turn "MAST cannot be reached" into one clear :class:`NetworkError`."""
        import requests

        try:
            yield
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            msg = (f"cannot reach MAST at {self.server} while {what} ({type(err).__name__}); check "
                   "the network connection or [local] mast_server")
            raise NetworkError(msg) from None

    def query(self, *, proposal_id: str | None = None, target: str | None = None,
              coordinates: tuple[float, float] | None = None, radius_deg: float = 0.2,
              instruments: Iterable[str] = (), filters: Iterable[str] = ()) -> Table:
        """Observations matching the criteria (an empty table if none).

        Parameters
        ----------
        proposal_id : str, optional
            Proposal (program) id.
        target : str, optional
            Target name: with ``proposal_id`` it is matched against ``target_name``; alone it is
            resolved to coordinates by MAST's name resolver and searched within ``radius_deg``.
        coordinates : (float, float), optional
            RA, Dec (deg) of a cone search of ``radius_deg``.
        radius_deg : float
            Cone radius.
        instruments : iterable of str
            ``instrument_name`` values.
        filters : iterable of str
            Filters to keep.

        Returns
        -------
        astropy.table.Table
        """
        from astroquery.exceptions import ResolverError

        criteria: dict[str, Any] = {"obs_collection": "JWST"}
        if proposal_id:
            criteria["proposal_id"] = str(proposal_id)
        if instruments:
            criteria["instrument_name"] = list(instruments)
        if coordinates is not None:
            from astropy.coordinates import SkyCoord

            criteria["coordinates"] = SkyCoord(*coordinates, unit="deg")
            criteria["radius"] = f"{radius_deg} deg"
        elif target and not proposal_id:
            criteria["objectname"] = target
            criteria["radius"] = f"{radius_deg} deg"
        try:
            with self._network("querying observations"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obs = self.obs.query_criteria(**criteria)
        except ResolverError as err:
            msg = f"MAST's name resolver does not know target {target!r}: {err}"
            raise DownloadError(msg) from None
        obs = Table(obs) if obs is not None else Table()
        return select_observations(obs, target=target if proposal_id else None,
                                   filters=filters) if len(obs) else obs

    def products(self, observations: Table) -> Table:
        """All products of the observations (an empty table if none)."""
        if not len(observations):
            return Table()
        with self._network("listing products"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Table(self.obs.get_product_list(observations))

    def _cap(self, size: int | None) -> int:
        """Bytes a transfer may write: the listed size (+ margin) when plausible, else the cap."""
        return min(size + SIZE_MARGIN, self.max_bytes) if size else self.max_bytes

    def _transfer(self, url: str, part: Path, size: int | None) -> None:
        """Stream ``url`` into ``part``, resuming with ``Range`` (:func:`mast_transfer.stream_into`).

        Connect and read timeouts apply, redirects are followed by hand
        (:func:`mast_transfer.get_following_redirects`), the body is capped at :meth:`_cap` and must
        keep ``min_rate`` over each ``rate_window``. (astroquery's own downloader has neither a
        timeout nor a size cap, hence this loop.)
        """
        start = part.stat().st_size if part.is_file() else 0
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-{size - 1 if size else ''}"
        cap = self._cap(size)
        what = (f"the {size} bytes MAST reported" if size and cap < self.max_bytes
                else f"the {self.max_bytes / 2**30:g} GiB cap ([download] max_file_gb)")
        with get_following_redirects(self.obs._session, url, headers, self.timeout) as resp:
            resp.raise_for_status()
            if start and resp.status_code != 206:  # the server ignored the range: start over
                start = 0
            stream_into(resp, part, start=start, cap=cap, cap_words=what, min_rate=self.min_rate,
                        rate_window=self.rate_window)

    def _fetch(self, row: Any, dest: Path) -> str:
        """Download one product to ``dest`` (resuming a ``.part``); returns how it went."""
        import requests
        from urllib3.exceptions import DecodeError
        from urllib3.exceptions import HTTPError as Urllib3Error

        size = int(row["size"]) if not np.ma.is_masked(row["size"]) else None
        if size is not None and size > self.max_bytes:
            msg = (f"{dest.name}: MAST lists it at {size / 2**30:.3g} GiB, over the "
                   f"{self.max_bytes / 2**30:g} GiB cap ([download] max_file_gb); not fetched")
            raise DownloadError(msg)
        if dest.is_file() and not verify_file(dest, size):
            return "already complete"
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        if part.is_symlink() or (part.exists() and not part.is_file()):
            log.warning("%s: %s is not a plain file (a link?); removing it, not following it",
                        dest.name, part.name)
            part.unlink()
        url = f"{self.obs._portal_api_connection.MAST_DOWNLOAD_URL}?uri={row['dataURI']}"
        if part.is_file() and size and part.stat().st_size >= size:  # complete but never renamed
            if not verify_file(part, size):
                part.replace(dest)
                return "resumed"
            part.unlink()
        resumed = part.is_file() and part.stat().st_size > 0
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s: %s; retry %d/%d in %.1f s", dest.name, last, attempt, self.retries, delay)
                time.sleep(delay)
            try:
                self._transfer(url, part, size)
            except (TooLong, DecodeError, requests.exceptions.ContentDecodingError) as err:
                last = f"{err}: fetching it again from the start"
                part.unlink(missing_ok=True)
                resumed = False
                continue
            except BadRedirect as err:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{dest.name}: {err}; not followed") from None
            except requests.exceptions.HTTPError as err:
                code = err.response.status_code if err.response is not None else 0
                if code in (401, 403):
                    msg = (f"{dest.name}: MAST refused access (HTTP {code}); exclusive-access data need "
                           "an API token with rights to it ([local] api_key)")
                    raise DownloadError(msg) from None
                if code < 500:
                    msg = f"{dest.name}: MAST answered HTTP {code} for {url}"
                    raise DownloadError(msg) from None
                last = f"HTTP {code}"
                continue
            except TooSlow as err:
                last = f"transfer too slow ({err})"
                continue
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout, ConnectionResetError, Urllib3Error, TimeoutError) as err:
                last = f"transfer broke off ({type(err).__name__})"
                continue
            except requests.exceptions.RequestException as err:   # anything else of requests': this file
                part.unlink(missing_ok=True)
                raise DownloadError(f"{dest.name}: {type(err).__name__}: {err}") from None
            why = verify_file(part, size)
            if not why:
                part.replace(dest)
                return "resumed" if resumed or attempt else "downloaded"
            last = f"{why}: fetching it again from the start"
            part.unlink()
            resumed = False
        msg = f"{dest.name}: failed after {self.retries} retries ({last}); run again to resume"
        raise DownloadError(msg)

    def download(self, plan: DownloadPlan, *, progress: bool = True) -> Table:
        """Fetch a plan's products into ``<dest>/mastDownload/JWST/<obs_id>/`` and write a manifest.

        Returns
        -------
        astropy.table.Table
            The manifest (also written to ``<dest>/download_manifest.ecsv``, atomically).
        """
        from tqdm import tqdm

        from jwstgal.logs import bar_disabled

        targets = [product_path(plan.dest, row) for row in plan.products]  # all checked before any write
        rows, failed = [], []
        bar = tqdm(total=plan.total_bytes, unit="B", unit_scale=True, desc=f"MAST {plan.label}",
                   disable=bar_disabled(progress))
        try:
            for row, dest in zip(plan.products, targets, strict=True):
                try:
                    with self._network(f"downloading {dest.name}"):
                        status = self._fetch(row, dest)
                except NetworkError:
                    raise
                except DownloadError as err:  # one bad file does not stop the others
                    log.error("%s", err)
                    failed.append(str(err))
                    status = f"failed: {err}"
                rows.append((str(dest.relative_to(plan.dest)), str(row["obs_id"]), int(row["size"]),
                             status, str(row["dataURI"])))
                bar.update(int(row["size"]))
        finally:
            bar.close()
            self._write_manifest(plan.dest, rows)
        if failed:
            msg = (f"{plan.label}: {len(failed)} of {len(targets)} files failed (listed in "
                   f"{plan.dest / 'download_manifest.ecsv'}); run again to retry them. First: {failed[0]}")
            raise DownloadError(msg)
        return self._write_manifest(plan.dest, rows)

    def _write_manifest(self, dest: Path, rows: list[tuple]) -> Table:
        """Write what arrived (and what failed) to ``<dest>/download_manifest.ecsv``, atomically."""
        manifest = Table(rows=rows or None, names=("file", "obs_id", "size", "status", "uri"),
                         dtype=(str, str, np.int64, str, str))
        manifest.meta["comments"] = [f"MAST server {self.server}", time.strftime("%Y-%m-%dT%H:%M:%S")]
        with atomic_path(dest / "download_manifest.ecsv") as tmp:
            manifest.write(tmp, format="ascii.ecsv")
        return manifest


def plan_config_downloads(science: Any, raw_dir: Path, archive: MastArchive,
                          targets: Iterable[str] | None = None) -> tuple[list[DownloadPlan], list[str]]:
    """Plans for every configured target (and the observations it borrows from others).

    For each ``[projects.<id>] targets`` entry the proposal's JWST imaging observations of the
    configured instruments and bands are listed once, matched to the target by name, and their
    products filtered by ``[download]`` (product types, subgroups, calibration levels) and
    ``[pipeline] obs_to_skip``. ``[extra_obs_to_include.<target>] <other> = [prefixes]`` adds the
    other target's files matching the prefixes, into the other target's tree (where the
    reprocessing looks for them).

    Parameters
    ----------
    science : ScienceConfig
        Validated science configuration.
    raw_dir : pathlib.Path
        Root of the raw tree.
    archive : MastArchive
        Connection to MAST.
    targets : iterable of str, optional
        Restrict to these targets.

    Returns
    -------
    (list of DownloadPlan, list of str)
        Plans, and one message per target for which MAST has nothing to fetch.
    """
    from jwstgal.bands import get_band

    wanted = set(targets) if targets else None
    bands = [get_band(b) for b in science.bands]
    instruments = sorted({INSTRUMENT_MODES[b.instrument] for b in bands})
    filters = sorted({b.filter for b in bands})
    dl = science.download
    by_proposal: dict[str, Table] = {}

    def observations(pid: str) -> Table:
        if pid not in by_proposal:
            by_proposal[pid] = archive.query(proposal_id=pid, instruments=instruments, filters=filters)
        return by_proposal[pid]

    def products_of(pid: str, target: str, patterns: list[str] | None = None) -> Table:
        obs = select_observations(observations(pid), target=target)
        prods = archive.products(obs)
        return select_products(prods, product_types=dl.products, subgroups=dl.product_subgroups,
                               calib_levels=dl.calib_level, skip=science.pipeline.obs_to_skip,
                               patterns=patterns)

    project_of = {t: pid for pid, p in science.projects.items() for t in p.targets}
    plans, missing = [], []
    for pid, project in science.projects.items():
        for target in project.targets:
            if wanted is not None and target not in wanted:
                continue
            prods = products_of(pid, target)
            if not len(prods):
                missing.append(f"{target}: MAST has no {'/'.join(dl.products)} "
                               f"{'/'.join(dl.product_subgroups) or 'any'} products at calib_level "
                               f"{dl.calib_level} for target {target!r} in proposal {pid} "
                               f"({', '.join(instruments)}; {', '.join(filters)})")
            else:
                plans.append(DownloadPlan(raw_dir / target, prods, target))
            for other, prefixes in science.extra_obs_to_include.get(target, {}).items():
                extra = products_of(project_of.get(other, pid), other, list(prefixes))
                if len(extra):
                    plans.append(DownloadPlan(raw_dir / other, extra, f"{other} (for {target})"))
                else:
                    missing.append(f"{target}: no files of {other} match extra_obs_to_include "
                                   f"{list(prefixes)}")
    return plans, missing
