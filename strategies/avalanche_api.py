"""Everything retain uses from Avalanche, imported in this one place.

Import this module inside functions, never at the top of another: importing Avalanche costs
seconds, and read-only commands never train. Its import-time warnings that say nothing to an
operator (qpsolvers' "no QP solver found": only the GEM strategies, which retain does not
use, need one) are silenced here, once.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
    from avalanche.core import SupervisedPlugin
    from avalanche.evaluation.metrics import Accuracy, Forgetting
    from avalanche.training import EWC, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "EWC",
    "Accuracy",
    "ClassBalancedBuffer",
    "EvaluationPlugin",
    "Forgetting",
    "Naive",
    "Replay",
    "ReplayPlugin",
    "SupervisedPlugin",
    "SupervisedTemplate",
    "_make_taskaware_tensor_classification_dataset",
    "benchmark_from_datasets",
]
