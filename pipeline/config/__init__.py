"""The typed configuration of the downstream and meta-training stages: one frozen dataclass
per params.yaml section, the bounds of each field declared beside it, and one loader.

Only this module speaks of ``params.yaml``: :func:`read` checks a mapping against a
dataclass and raises :class:`~pipeline.params.ParamError` naming the key the user wrote
(``params.yaml: finetune.methods.coop.train.lr = -1: must be >= 0``); the library's
constructors raise plain ``ValueError`` s.
"""

from .downstream import (
    FEATURE_OPTIONS,
    GRAM_MODELS,
    AugmentConfig,
    DownstreamConfig,
    EvaluateConfig,
    FewShotEpochs,
    MethodConfig,
    TrainConfig,
    method_rows,
    read_allow_fewer,
    read_augment,
    read_c_grid,
    read_downstream,
    read_evaluate,
    read_features,
    read_few_shot_epochs,
    read_method,
    read_negative_controls,
    read_protocols,
    read_seed,
    read_seeds,
    read_train,
)
from .fields import Bound, bounded, check, read, read_bounds
from .learners import (
    LEARNER_OPTIONS,
    LambdaOverride,
    check_learner,
    read_lambda_overrides,
    run_options,
)
from .meta import TasksConfig, read_meta, read_tasks

__all__ = [
    "FEATURE_OPTIONS",
    "GRAM_MODELS",
    "LambdaOverride",
    "LEARNER_OPTIONS",
    "AugmentConfig",
    "Bound",
    "DownstreamConfig",
    "EvaluateConfig",
    "FewShotEpochs",
    "MethodConfig",
    "TasksConfig",
    "TrainConfig",
    "bounded",
    "check",
    "check_learner",
    "method_rows",
    "read",
    "read_allow_fewer",
    "read_augment",
    "read_bounds",
    "read_c_grid",
    "read_downstream",
    "read_evaluate",
    "read_features",
    "read_few_shot_epochs",
    "read_lambda_overrides",
    "read_meta",
    "read_method",
    "read_negative_controls",
    "read_protocols",
    "read_seed",
    "read_seeds",
    "read_tasks",
    "read_train",
    "run_options",
]
