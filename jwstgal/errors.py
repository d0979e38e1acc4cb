"""Exception taxonomy of the suite.

Every error the suite raises on purpose derives from :class:`ReductionError`, so that the command-line
entry points can turn it into one clear line and an exit code while real bugs keep their traceback.
"""


class ReductionError(Exception):
    """Base class of all deliberate errors of the suite."""


class ConfigError(ReductionError):
    """The configuration is invalid: the message names file, key, value and the allowed values."""


class InputNotFoundError(ReductionError):
    """An input file or directory that a step needs does not exist."""


class NothingToDo(ReductionError):  # noqa: N818 - it is a skip, not an error, and reads as such
    """A step has nothing to do for this target/band (a skip, not a failure)."""


class StepFailedError(ReductionError):
    """A processing step failed; earlier results are kept."""


class CRDSError(ReductionError):
    """The CRDS reference-file system could not be reached or had no answer."""


class DownloadError(ReductionError):
    """A MAST query or download failed (bad token, no data, a file that would not come)."""


class NetworkError(DownloadError):
    """MAST (or another server) could not be reached at all."""
