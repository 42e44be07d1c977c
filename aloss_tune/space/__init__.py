"""Search spaces: one declarative description of a study, for every backend.

A space is a YAML file (or a dict) in Optuna's short form. Three lines are enough; every other field has a
default and every loss factory supplies default search ranges::

    study: quick_robust
    data: contaminated_regression
    loss: [mse, huber, barron]

The full form::

    study: robust_regression
    data: contaminated_regression          # built-in name, "module:function", or {name: ..., args: {...}}
    model:
      builder: mlp                         # built-in name or "module:function"
      params:                              # flat keys model.<name>; a bare value fixes it
        units: {type: int, low: 16, high: 128, log: true}
        dropout: {type: float, low: 0.0, high: 0.3}
    optimizer:
      name: adam
      learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    objective: {metric: val_mae, direction: minimize}
    training: {epochs: 30, batch_size: 32, early_stopping: {patience: 5}}
    loss:
      choices: [mse, huber, barron]
      params:                              # overrides of the factories' default ranges
        huber: {delta: {type: float, low: 0.1, high: 3, log: true}}
        barron: {alpha: 1.0}               # a bare value fixes a parameter
      penalty: {l2: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
    search: {sampler: tpe, pruner: median, n_trials: 20, seed: 0}

Loading validates everything before any work starts; an error names the file and the key path
(``loss.params.huber.delta.low``) and says what is allowed.
"""

from aloss_tune.space._loader import DuplicateKeyError, UniqueKeyLoader, load_yaml
from aloss_tune.space._model import (
    BACKENDS,
    DEFAULT_OBJECTIVE,
    OPTIMIZER_ARGS,
    OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    TASK_METRICS,
    TUNERS,
    VALIDATION_ONLY,
    FixedSuggester,
    Objective,
    ParamValue,
    Search,
    SearchSpace,
    Suggester,
    Training,
    load_space,
)

__all__ = [
    "BACKENDS", "DEFAULT_OBJECTIVE", "OPTIMIZERS", "OPTIMIZER_ARGS", "PRUNERS", "SAMPLERS", "TASK_METRICS", "TUNERS",
    "VALIDATION_ONLY", "DuplicateKeyError", "FixedSuggester", "Objective", "ParamValue", "Search", "SearchSpace",
    "Suggester", "Training", "UniqueKeyLoader", "load_space", "load_yaml",
]
