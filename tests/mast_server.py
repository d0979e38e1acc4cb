"""A local HTTP server speaking the parts of the MAST portal API that astroquery.mast uses.

- ``POST /portal/Mashup/Mashup.asmx/columnsconfig``: column configuration (types decide how
  astroquery encodes filters);
- ``POST /api/v0/invoke``: Mashup services ``Mast.Caom.Filtered`` (criteria), ``Mast.Caom.Filtered.Position``
  (criteria + cone) and ``Mast.Caom.Products`` (products of observations), JSON with paging;
- ``HEAD``/``GET /api/v0.1/Download/file?uri=mast:JWST/product/<file>``: files, with ``Accept-Ranges`` and
  ``Range`` support; exclusive-access products need a valid ``mast_token`` cookie;
- ``GET /whoami``: token check behind ``Observations.login``;
- ``GET http://mastresolver.stsci.edu/Santa-war/query`` when used as an HTTP proxy: name resolution.

Faults can be injected: ``drop_after[filename] = n`` closes the connection after n bytes of the next
full GET of that file; ``stall[filename] = s`` sends the headers and then nothing for s seconds;
``endless`` (a set of file names) streams such a file without a length, forever (until the client
hangs up, or 64 MiB); ``redirect[filename] = url`` answers 302 to ``url`` (``redirect["whoami"]``: the
login check); ``drip[filename] = (n, s)`` sends the file n bytes at a time, s seconds apart;
``encoding[filename] = "gzip"`` labels the (plain) body gzip-encoded. Every request is logged in
``server.log`` as (method, path, Range header) and its cookies in ``server.cookies``.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlparse

OBS_FIELDS = {"intentType": "string", "obs_collection": "string", "provenance_name": "string",
              "instrument_name": "string", "project": "string", "filters": "string",
              "target_name": "string", "obs_id": "string", "s_ra": "float", "s_dec": "float",
              "proposal_id": "string", "dataproduct_type": "string", "calib_level": "int",
              "t_min": "float", "t_max": "float", "t_exptime": "float", "obsid": "string",
              "dataRights": "string", "s_region": "string", "jpegURL": "string", "dataURL": "string",
              "mtFlag": "boolean", "srcDen": "float", "objID": "string", "distance": "float"}
PRODUCT_FIELDS = {"obsID": "string", "obs_collection": "string", "dataproduct_type": "string",
                  "obs_id": "string", "description": "string", "type": "string", "dataURI": "string",
                  "productType": "string", "productGroupDescription": "string",
                  "productSubGroupDescription": "string", "productDocumentationURL": "string",
                  "project": "string", "prvversion": "string", "proposal_id": "string",
                  "productFilename": "string", "size": "int", "parent_obsid": "string",
                  "dataRights": "string", "calib_level": "int"}
COLUMN_TYPES = {"string": "char", "float": "double", "int": "int", "boolean": "boolean"}


class MastState:
    """What the fake archive holds and how it misbehaves."""

    def __init__(self) -> None:
        self.observations: list[dict] = []
        self.products: dict[str, list[dict]] = {}          # obsid -> product rows
        self.files: dict[str, bytes] = {}                  # productFilename -> content
        self.tokens: set[str] = set()
        self.names: dict[str, tuple[float, float]] = {}    # resolver: lower-case name -> (ra, dec)
        self.drop_after: dict[str, int] = {}
        self.stall: dict[str, float] = {}
        self.endless: set[str] = set()
        self.redirect: dict[str, str] = {}
        self.drip: dict[str, tuple[int, float]] = {}
        self.encoding: dict[str, str] = {}
        self.cookies: list[tuple[str, str]] = []           # (path, Cookie header) of every GET
        self.log: list[tuple[str, str, str]] = []
        self.pagesize_override: int | None = None

    def add_observation(self, obs: dict, products: list[tuple[dict, bytes]]) -> None:
        """Register an observation and its products (row, content)."""
        row = {k: obs.get(k, "" if t == "string" else 0) for k, t in OBS_FIELDS.items()}
        self.observations.append(row)
        plist = []
        for prod, content in products:
            p = {k: prod.get(k, "" if t == "string" else 0) for k, t in PRODUCT_FIELDS.items()}
            p["obsID"] = p["parent_obsid"] = row["obsid"]
            p["dataURI"] = f"mast:JWST/product/{p['productFilename']}"
            p["size"] = len(content)
            plist.append(p)
            self.files[p["productFilename"]] = content
        self.products[row["obsid"]] = plist


def _matches(row: dict, flt: dict) -> bool:
    from fnmatch import fnmatch

    value = row.get(flt["paramName"])
    values = flt.get("values", [])
    if values and isinstance(values[0], dict):
        return values[0]["min"] <= value <= values[0]["max"]
    if any(str(value).lower() == str(v).lower() for v in values):
        return True
    free = flt.get("freeText")
    return bool(free) and fnmatch(str(value).lower(), free.replace("%", "*").lower())


def _sep_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r = math.radians
    c = (math.sin(r(dec1)) * math.sin(r(dec2))
         + math.cos(r(dec1)) * math.cos(r(dec2)) * math.cos(r(ra1 - ra2)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


class Handler(BaseHTTPRequestHandler):
    """Request handler; the archive state is ``self.server.state``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    @property
    def state(self) -> MastState:
        return self.server.state  # type: ignore[attr-defined]

    def _json(self, obj: object, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token_ok(self) -> bool:
        cookie = self.headers.get("Cookie", "")
        tokens = [c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("mast_token=")]
        return bool(tokens) and tokens[0] in self.state.tokens

    def do_HEAD(self) -> None:  # noqa: N802
        self._file(head=True)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        self.state.log.append(("GET", self.path, self.headers.get("Range", "")))
        self.state.cookies.append((self.path, self.headers.get("Cookie", "")))
        if url.netloc == "mastresolver.stsci.edu":
            name = parse_qs(url.query).get("name", [""])[0]
            hit = self.state.names.get(name.lower())
            coords = ([{"searchString": name.lower(), "ra": hit[0], "decl": hit[1], "resolver": "NED",
                        "canonicalName": name.upper()}] if hit else [])
            self._json({"resolvedCoordinate": coords})
        elif url.path == "/whoami" and "whoami" in self.state.redirect:
            self.send_response(302)
            self.send_header("Location", self.state.redirect["whoami"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path in ("/whoami", "/whoami/"):
            ok = self._token_ok()
            self._json({"anon": not ok, "attrib": {"display_name": "Test User"} if ok else {}})
        elif url.path == "/api/v0.1/Download/file":
            self._file(head=False)
        else:
            self._json({"status": "ERROR", "msg": f"no such path {url.path}"}, 404)

    def _file(self, head: bool) -> None:
        url = urlparse(self.path)
        if head:
            self.state.log.append(("HEAD", self.path, ""))
        uri = unquote_plus(parse_qs(url.query).get("uri", [""])[0])
        name = uri.rsplit("/", 1)[-1]
        if name not in self.state.files:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rights = next((p["dataRights"] for ps in self.state.products.values() for p in ps
                       if p["productFilename"] == name), "PUBLIC")
        if rights == "EXCLUSIVE_ACCESS" and not self._token_ok():
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if name in self.state.redirect and not head:
            self.send_response(302)
            self.send_header("Location", self.state.redirect[name])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content = self.state.files[name]
        if name in self.state.endless and not head:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(1024):  # 64 MiB at most
                    self.wfile.write(content[:65536].ljust(65536, b"\0"))
            except OSError:
                pass
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not head:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if name in self.state.encoding:
            self.send_header("Content-Encoding", self.state.encoding[name])
        self.send_header("Content-Length", str(len(content) - start))
        self.end_headers()
        if head:
            return
        if name in self.state.stall:
            import time

            self.wfile.flush()
            time.sleep(self.state.stall[name])
        body = content[start:]
        if name in self.state.drip:
            import time

            n, pause = self.state.drip[name]
            try:
                for i in range(0, len(body), n):
                    self.wfile.write(body[i:i + n])
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:                                # the client gave up
                self.close_connection = True
            return
        drop = self.state.drop_after.pop(name, None) if not rng else None
        if drop is not None:  # the connection dies mid-file
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            import socket

            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length).decode()
        url = urlparse(self.path)
        self.state.log.append(("POST", self.path, ""))
        if url.path.endswith("/columnsconfig"):
            fields = {**OBS_FIELDS, **PRODUCT_FIELDS}
            self._json({k: {"vot.datatype": COLUMN_TYPES[t], "text": k} for k, t in fields.items()})
            return
        if url.path != "/api/v0/invoke":
            self._json({"status": "ERROR", "msg": "unknown path"}, 404)
            return
        req = json.loads(unquote_plus(raw.split("=", 1)[1]))
        service, params = req["service"], req["params"]
        if service in ("Mast.Caom.Filtered", "Mast.Caom.Filtered.Position"):
            rows = [r for r in self.state.observations
                    if all(_matches(r, f) for f in params.get("filters", []))]
            if service.endswith("Position"):
                ra, dec, radius = (float(x) for x in params["position"].split(","))
                rows = [r for r in rows if _sep_deg(ra, dec, r["s_ra"], r["s_dec"]) <= radius]
            fields = OBS_FIELDS
        elif service == "Mast.Caom.Products":
            rows = [p for oid in params["obsid"].split(",") for p in self.state.products.get(oid, [])]
            fields = PRODUCT_FIELDS
        else:
            self._json({"status": "ERROR", "msg": f"service {service} not emulated"})
            return
        pagesize = self.state.pagesize_override or int(req.get("pagesize", 50000))
        page = int(req.get("page", 1))
        pages = max(1, math.ceil(len(rows) / pagesize))
        chunk = rows[(page - 1) * pagesize: page * pagesize]
        self._json({"status": "COMPLETE", "msg": "",
                    "fields": [{"name": k, "type": t} for k, t in fields.items()],
                    "data": chunk,
                    "paging": {"page": page, "pageSize": pagesize, "pagesFiltered": pages,
                               "rows": len(chunk), "rowsFiltered": len(rows), "rowsTotal": len(rows)}})


class MastServer:
    """Context manager running the fake MAST on a free local port (``.url``)."""

    def __init__(self, state: MastState) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.state = state  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MastServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_directory_of_uncals(state: MastState, files: list[Path], *, target_name: str, proposal_id: str,
                              ra: float, dec: float, exclusive: bool = False) -> None:
    """Register simulated uncal files as a MAST archive: one observation per (instrument, filter)."""
    from astropy.io import fits

    groups: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        h = fits.getheader(f)
        groups.setdefault((h["INSTRUME"], h["FILTER"]), []).append(f)
    for n, ((inst, filt), members) in enumerate(sorted(groups.items())):
        obsid = str(90000000 + len(state.observations))
        obs_id = f"jw{int(proposal_id):05d}-o{n + 1:03d}_t001_{inst.lower()}_{filt.lower()}"
        prods = []
        for f in members:
            hdul = fits.open(f)
            import io

            buf = io.BytesIO()
            hdul.writeto(buf, checksum=True)
            hdul.close()
            exp = f.name.removesuffix("_uncal.fits")
            prods.append(({"obs_id": exp, "productFilename": f.name, "productType": "SCIENCE",
                           "productSubGroupDescription": "UNCAL", "calib_level": 1,
                           "productGroupDescription": "Minimum Recommended Products",
                           "obs_collection": "JWST", "proposal_id": proposal_id,
                           "dataRights": "EXCLUSIVE_ACCESS" if exclusive else "PUBLIC",
                           "dataproduct_type": "image", "type": "S"}, buf.getvalue()))
            prods.append(({"obs_id": exp, "productFilename": f.name.replace("_uncal.fits", "_rate.jpg"),
                           "productType": "PREVIEW", "productSubGroupDescription": "RATE",
                           "calib_level": 2, "obs_collection": "JWST", "proposal_id": proposal_id,
                           "dataRights": "PUBLIC", "dataproduct_type": "image", "type": "S"},
                          b"\xff\xd8 not really a jpeg"))
        state.add_observation({"obs_collection": "JWST", "instrument_name": f"{inst}/IMAGE",
                               "filters": filt, "target_name": target_name, "obs_id": obs_id,
                               "s_ra": ra, "s_dec": dec, "proposal_id": proposal_id,
                               "dataproduct_type": "image", "calib_level": 3, "obsid": obsid,
                               "intentType": "science", "project": "JWST",
                               "dataRights": "EXCLUSIVE_ACCESS" if exclusive else "PUBLIC"}, prods)
