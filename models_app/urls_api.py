from rest_framework.routers import DefaultRouter

from .api import FaceImageViewSet

router = DefaultRouter(trailing_slash=True)
router.register("images", FaceImageViewSet, basename="faceimage")
urlpatterns = router.urls
