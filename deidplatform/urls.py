from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


def home(request: HttpRequest) -> HttpResponse:
    """The landing page: sign-in when signed out; the operator's ways in when signed in."""
    return render(request, "home.html")


def healthz(request):
    return JsonResponse({"status": "ok"})


def _api_error(request: HttpRequest, status: int, code: str, detail: str) -> JsonResponse | None:
    # Under /api/ every answer is JSON in the one error shape, even when no URL matched.
    if not request.path.startswith("/api/"):
        return None
    body = {"errors": [{"field": "non_field_errors", "code": code, "detail": detail}]}
    return JsonResponse(body, status=status)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _api_error(request, 404, "not_found", "Not found.") or defaults.page_not_found(
        request, exception
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return _api_error(request, 500, "server_error", "Server error.") or defaults.server_error(
        request
    )


handler404 = not_found
handler500 = server_error


urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("deidplatform.dashboard.urls")),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("models_app.urls_api")),
    path("", include("models_app.urls")),
    path("", include("ratings.urls")),
]
