from django.urls import path

from .faces import views

app_name = "models_app"
urlpatterns = [
    path("faces/<uuid:image_id>/<str:variant>", views.serve_face_image, name="face-file"),
]
