"""Turn a config of the original PHANGS-JWST scripts (or pjpipe) into this suite's config.

Usage: python migrate_config.py OLD_CONFIG [OLD_LOCAL] --out-dir DIR
"""

from jwstgal.cli.migrate_config import main

if __name__ == "__main__":
    raise SystemExit(main())
