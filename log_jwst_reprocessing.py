"""Run run_jwst_reprocessing.py and keep its log in <working_dir>/jwst_reprocess_log_<time>.log.

Usage: python log_jwst_reprocessing.py [config/config.toml [config/local.toml [BAND]]]
"""

from jwstgal.cli.log_jwst_reprocessing import main

if __name__ == "__main__":
    raise SystemExit(main())
