"""The de-identification generator (issue 16; patent claims 5-10, paragraphs 48 and 54-61,
FIG. 5): a network that de-identifies in one forward pass, trained with the loop's scores.

Pure computation, like ``models_app.deid``: no Django import. The modules:

* :mod:`.network` — :class:`ParamGenerator`, a small CNN predicting the parameters of the
  configured parameterisation (the plug; ``style`` by default) from the context crop;
* :mod:`.train` — :func:`train_generator`: batch-aggregated updates with the engine's loss,
  held-out scoring every epoch, the stop rules, checkpoints to resume from;
* :mod:`.apply` — :func:`run_generator`: one pass (``generator``) or the loop started from
  its output (``hybrid``), scored by the loop itself;
* :mod:`.io` — the weights file (safetensors, no pickles).
"""

from __future__ import annotations

from .apply import (
    METHOD_GENERATOR,
    METHOD_HYBRID,
    METHOD_ITERATIVE,
    METHODS,
    STOP_SINGLE_PASS,
    predict_params,
    run_generator,
)
from .io import CorruptGeneratorError, generator_to_bytes, load_generator
from .network import GeneratorConfig, GeneratorConfigError, ParamGenerator
from .train import (
    STOP_REASONS,
    FaceSet,
    GeneratorTrainConfig,
    GeneratorTrainResult,
    GeneratorTrainState,
    StopRules,
    evaluate_generator,
    train_generator,
)

__all__ = [
    "METHODS",
    "METHOD_GENERATOR",
    "METHOD_HYBRID",
    "METHOD_ITERATIVE",
    "STOP_REASONS",
    "STOP_SINGLE_PASS",
    "CorruptGeneratorError",
    "FaceSet",
    "GeneratorConfig",
    "GeneratorConfigError",
    "GeneratorTrainConfig",
    "GeneratorTrainResult",
    "GeneratorTrainState",
    "ParamGenerator",
    "StopRules",
    "evaluate_generator",
    "generator_to_bytes",
    "load_generator",
    "predict_params",
    "run_generator",
    "train_generator",
]
