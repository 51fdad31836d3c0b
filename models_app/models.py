"""The app's models, one module per domain; Django finds them through this module.

Re-exports keep ``models_app.models.X`` working: the app label stays ``models_app`` and the
migrations refer to the upload-path functions here.
"""

from .faces.models import ErasureRecord, FaceImage, Subject, _chip_path, _face_path
from .jobs.models import DeidBatch, DeidIteration, DeidJob, _checkpoint_path
from .rounds.models import Round, _plot_path
from .training.models import ModelKind, ModelVersion, TrainingRun, _diagram_path, _model_path

__all__ = [
    "DeidBatch", "DeidIteration", "DeidJob", "ErasureRecord", "FaceImage", "ModelKind", "ModelVersion", "Round", "Subject",
    "TrainingRun", "_checkpoint_path", "_chip_path", "_diagram_path", "_face_path", "_model_path", "_plot_path",
]
