"""Library interface of the reprocessing (stages 1-3 per target and band).

``python jwst_reprocess.py [CONFIG [LOCAL [BAND]]]`` is the same as run_jwst_reprocessing.py.
"""

from jwstgal.cli.run_jwst_reprocessing import main
from jwstgal.reprocess import run_all
from jwstgal.stages import run_stage1, run_stage2, run_stage3
from jwstgal.steps import STEPS, BandContext
from jwstgal.steps.lv1 import raw_exposures

__all__ = ["STEPS", "BandContext", "main", "raw_exposures", "run_all", "run_stage1", "run_stage2",
           "run_stage3"]

if __name__ == "__main__":
    raise SystemExit(main())
