"""The loss functions and classes, in `keras.ops` only.

Every module here imports nothing of ours but `aloss_tune.errors`, the parameter domains (`aloss_tune.domains`),
the registry of alpha formulas (`aloss_tune._alpha_formulas`) and its siblings, and nothing of optuna,
keras_tuner or mlflow. Those three import no Keras, so that the factories declare every parameter without it;
the maths here does. Each module lists its public names in ``__all__``; they are re-exported here.
"""

from aloss_tune.losses._base import Interval, Loss, align  # noqa: F401 - re-exported
from aloss_tune.losses.adaptive import *  # noqa: F403
from aloss_tune.losses.classic import *  # noqa: F403
from aloss_tune.losses.dynamic import *  # noqa: F403
from aloss_tune.losses.label_noise import *  # noqa: F403
from aloss_tune.losses.model import LossModel, ModelAwareLoss, attach, export, learned_values, needs_model  # noqa: F401
from aloss_tune.losses.partition import *  # noqa: F403
from aloss_tune.losses.penalty import Penalized, penalized_weights, weight_penalty  # noqa: F401
from aloss_tune.losses.robust import *  # noqa: F403
from aloss_tune.losses.weighted import *  # noqa: F403
