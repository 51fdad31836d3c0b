from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "deidplatform.dashboard"
    label = "dashboard"
    verbose_name = "Operator dashboard"
    default_auto_field = "django.db.models.BigAutoField"
