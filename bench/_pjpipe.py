"""Shared by the benchmarks that run pjpipe in its own environment (``.bench-pjpipe``).

pjpipe's package ``__init__`` imports ``spacepylot``, which is not on PyPI; :data:`PREAMBLE` (the start
of every driver script) registers an empty ``pjpipe`` package so that its submodules import without
that ``__init__``. pjpipe's code itself is untouched.
"""

PREAMBLE = r"""
import importlib.metadata, importlib.util, json, sys, time, types, warnings
import numpy as np
spec = importlib.util.find_spec("pjpipe")
pkg = types.ModuleType("pjpipe")
pkg.__path__ = list(spec.submodule_search_locations)
pkg.__version__ = importlib.metadata.version("pjpipe")
sys.modules["pjpipe"] = pkg
"""
