"""Sphinx configuration of the jwstgal documentation (``docs/``).

Built by ``.ci/run`` with warnings as errors::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import jwstgal

project = "jwstgal"
author = "the jwstgal developers"
copyright = "2026, the jwstgal developers"  # noqa: A001 - Sphinx's name for it
release = version = jwstgal.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3                       # [text](#heading) links between and within pages
myst_enable_extensions = ["colon_fence"]

napoleon_google_docstring = False              # numpydoc docstrings only
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"                     # the signatures show them; the models are pydantic

html_theme = "alabaster"
html_title = f"jwstgal {release}"
html_theme_options = {"description": "JWST NIRCam + MIRI imaging of nearby galaxies, from a config file",
                      "fixed_sidebar": True}
