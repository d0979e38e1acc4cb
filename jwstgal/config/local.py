"""The machine configuration, ``config/local.toml``: paths and resources of one computer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jwstgal.settings import Strict


class SlurmConfig(Strict):
    """``[local.slurm]``: keyword arguments of dask_jobqueue.SLURMCluster (one worker per job)."""

    queue: str | None = Field(None, description="Slurm partition.")
    account: str | None = Field(None, description="Slurm account.")
    cores: int = Field(1, ge=1, description="Cores per job (one single-threaded worker each).")
    memory: str = Field("8GB", description="Memory per job, e.g. '16GB'.")
    walltime: str = Field("04:00:00", description="Wall time per job.")
    job_extra_directives: list[str] = Field(default_factory=list,
                                            description="Extra #SBATCH lines.")
    job_script_prologue: list[str] = Field(default_factory=list,
                                           description="Shell lines run before each worker, e.g. "
                                           "activating the environment.")


class LocalConfig(Strict):
    """The ``[local]`` table of ``config/local.toml``: machine paths and resources."""

    raw_dir: str = Field(description="Root of the MAST download tree (never written by processing).")
    working_dir: str = Field(description="Root of all processing outputs.")
    crds_dir: str = Field("", description="CRDS cache; '' = <working_dir>/crds.")
    crds_mode: Literal["remote", "synthetic"] = Field(
        "remote", description="'remote': the STScI CRDS server; 'synthetic': a local cache of "
        "synthetic reference files matching simulated data (offline demo and tests).")
    crds_server_url: str = Field("https://jwst-crds.stsci.edu", description="CRDS server.")
    processes: int = Field(1, ge=1, description="Workers (local processes, Dask workers or Slurm "
                           "jobs) for per-exposure work.")
    executor: Literal["serial", "processes", "dask", "slurm"] = Field(
        "processes", description="Where tasks run: here, a local process pool, a Dask cluster "
        "(dask_scheduler, or a local one), or Slurm jobs via dask-jobqueue ([local.slurm]).")
    dask_scheduler: str = Field("", description="Address of an existing Dask scheduler.")
    memory_budget_gb: float = Field(
        0.0, ge=0, description="Memory (GiB) the tasks running at once may need together: stage 1-3 "
        "tasks start only while their estimated peaks fit (fewer workers than processes run, and the "
        "log says why). 0: 80 % of the memory available when the run starts, for workers on this "
        "machine; none for a remote Dask scheduler or Slurm jobs.")
    slurm: SlurmConfig | None = Field(None, description="Slurm job settings (executor = 'slurm').")
    api_key: str = Field("", description="MAST token ('' = anonymous or $MAST_API_TOKEN).")
    mast_server: str = Field("https://mast.stsci.edu", description="MAST portal (a mirror or test "
                             "server may stand in).")
    alignment_dir: str = Field("", description="Astrometric catalogues; '' = <repo>/alignment.")
    psf_dir: str = Field("", description="Where PSFs and kernels are written; '' = <repo>/PSF.")
    anchor_ref_dir: str = Field("", description="External maps for background anchoring, "
                                "<target>_<band>.fits (e.g. ngc0628_irac1.fits); '' = none.")
    psf_data_dir: str = Field("", description="stpsf data; '' = <repo>/PSF/stpsf_data.")

    @model_validator(mode="after")
    def _slurm(self) -> LocalConfig:
        if self.executor == "slurm" and self.slurm is None:
            msg = "executor = 'slurm' needs a [local.slurm] table (queue, cores, memory, walltime)"
            raise ValueError(msg)
        return self


class LocalFile(Strict):
    """Top level of ``local.toml``."""

    local: LocalConfig
