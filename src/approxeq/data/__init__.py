"""Task generators and loaders: GPs with an exact oracle, gridded fields (xarray), graphs and
n-body systems. This layer never imports models."""

from approxeq.data.base import TaskGenerator
from approxeq.data.gp import (
                              TASK_NAMES,
                              FixedKernel,
                              GPGenerator,
                              KernelMixture,
                              KernelPrior,
                              LogUniformKernelPrior,
                              MixtureGenerator,
                              SampledKernel,
                              SawtoothGenerator,
                              SyntheticGenerator,
                              gibbs_kernels,
                              gp_task,
                              ood,
)
from approxeq.data.graphs import (
                              CSL_SKIPS,
                              GRAPH_DATASETS,
                              GraphData,
                              decode_graph6,
                              load_exp,
                              load_graph8c,
                              load_graph_dataset,
                              load_sr25,
                              make_csl,
                              parse_exp,
                              with_degree,
)
from approxeq.data.kernels import (
                              EQ,
                              Gibbs,
                              Kernel,
                              Matern52,
                              Periodic,
                              SwitchingLengthscale,
                              WeaklyPeriodic,
)
from approxeq.data.nbody import (
                              NBodyConfig,
                              NBodyData,
                              coulomb_forces,
                              make_nbody,
                              make_nbody_splits,
                              sample_initial_conditions,
                              simulate,
                              total_energy,
)
from approxeq.data.normalise import MultiNormaliser, Normaliser
from approxeq.data.oracle import GPOracle, GPPredictive, OracleLoglik, gp_posterior, oracle_loglik
from approxeq.data.smoke import SmokeData, SmokeSettings, SmokeTaskGenerator, load_smoke  # noqa: F401
from approxeq.data.terrain import TerrainField, TerrainOracle, TerrainTaskGenerator  # noqa: F401
from approxeq.data.xarray_tasks import (
                              AuxiliaryFields,
                              XarrayTaskGenerator,
                              embedded_weather_files,
                              open_field,
                              select_region,
                              select_times,
                              stations_at,
)

__all__ = [
    "TaskGenerator",
    # Gaussian processes
    "TASK_NAMES", "FixedKernel", "GPGenerator", "KernelMixture", "KernelPrior",
    "LogUniformKernelPrior", "MixtureGenerator", "SampledKernel", "SawtoothGenerator",
    "SyntheticGenerator", "gibbs_kernels", "gp_task", "ood", "EQ", "Gibbs", "Kernel", "Matern52",
    "Periodic", "SwitchingLengthscale", "WeaklyPeriodic", "GPOracle", "GPPredictive",
    "OracleLoglik", "gp_posterior", "oracle_loglik",
    # gridded fields
    "Normaliser", "MultiNormaliser", "AuxiliaryFields", "XarrayTaskGenerator",
    "embedded_weather_files", "open_field", "select_region",
    "select_times", "stations_at",
    # graphs and particles
    "CSL_SKIPS", "GRAPH_DATASETS", "GraphData", "decode_graph6", "load_exp", "load_graph8c",
    "load_graph_dataset", "load_sr25", "make_csl", "parse_exp", "with_degree", "NBodyConfig",
    "NBodyData", "coulomb_forces", "make_nbody", "make_nbody_splits", "sample_initial_conditions",
    "simulate", "total_energy",
]
