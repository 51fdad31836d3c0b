from rest_framework.routers import DefaultRouter

from .faces.api import FaceImageViewSet, SubjectViewSet
from .jobs.api import DeidJobViewSet
from .rounds.api import RoundViewSet
from .training.api import ModelVersionViewSet, TrainingRunViewSet

router = DefaultRouter(trailing_slash=True)
router.register("images", FaceImageViewSet, basename="faceimage")
router.register("subjects", SubjectViewSet, basename="subject")
router.register("deid-jobs", DeidJobViewSet, basename="deid-job")
router.register("training-runs", TrainingRunViewSet, basename="training-run")
router.register("model-versions", ModelVersionViewSet, basename="api-model-version")
router.register("rounds", RoundViewSet, basename="round")
urlpatterns = router.urls
