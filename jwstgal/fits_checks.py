"""Reading a FITS file named by the user or a server without trusting it.

:func:`checked_header` opens a file only if it is a regular file (a FIFO would block, a device never
end), reads every HDU's header and refuses a file that is shorter than those headers say (a transfer
cut short, a copy interrupted): such a file reads its primary header fine and fails hours later.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from astropy.io import fits

from jwstgal.layout import not_a_regular_file


def checked_header(path: Path) -> fits.Header:
    """The primary header of a whole, readable FITS file.

    Raises
    ------
    ValueError
        Why the file cannot be used: not a regular file, not FITS, or truncated.
    """
    if why := not_a_regular_file(path):
        raise ValueError(why)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as h:
                header = h[0].header.copy()
    except (OSError, ValueError, TypeError, IndexError) as err:
        msg = f"not a readable FITS file ({err})"
        raise ValueError(msg) from None
    if cut := [w for w in caught if "truncated" in str(w.message)]:
        msg = f"truncated ({cut[0].message})"
        raise ValueError(msg)
    return header
