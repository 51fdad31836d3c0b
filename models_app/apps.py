from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Images and networks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers of each domain (file clean-up; re-scoring after a promotion).
        import models_app.faces.receivers  # noqa: F401
        import models_app.jobs.receivers  # noqa: F401
        import models_app.training.receivers  # noqa: F401
