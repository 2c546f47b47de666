"""Graph study: separation and classification with symmetrised graph models (``graph8c``, ``exp-
iso``, ``sr25``, ``exp-classify``, ``csl``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.graphs.separation import (
    SeparationEmbeddings,
    judge_separation,
    permuted_copy,
    separation_table,
)
from approxeq.experiments.studies.graphs.study import (
    GRAPH_EXPERIMENTS,
    GraphExperiment,
    GraphGIN,
    GraphMLP,
    build_graph_model,
    close_pairs,
    count_indistinguishable,
    embed,
    graph_experiment_config,
    run_graph_experiment,
    settings_of,
    train_classifier,
)

__all__ = [
    "GRAPH_EXPERIMENTS", "GraphExperiment", "GraphGIN", "GraphMLP", "SeparationEmbeddings",
    "build_graph_model", "close_pairs", "count_indistinguishable", "embed",
    "graph_experiment_config", "judge_separation", "permuted_copy", "run_graph_experiment",
    "separation_table", "settings_of", "train_classifier",
]
