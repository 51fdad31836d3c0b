from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, views

app_name = "ratings"

router = DefaultRouter(trailing_slash=True)
router.register("campaigns", api.CampaignViewSet, basename="campaign")

urlpatterns = [
    # Rater pages: the campaign's public slug only, never an identity.
    path("rate/img/<str:token>", views.image, name="image"),
    path("rate/<slug:slug>/", views.rate, name="rate"),
    path("rate/<slug:slug>/consent", views.consent, name="consent"),
    path("rate/<slug:slug>/decline", views.decline, name="decline"),
    path("rate/<slug:slug>/done", views.done, name="done"),
    # Rater API (session + CSRF); on PostgreSQL the common case takes ratings/hotpath.py.
    path("api/ratings/rate/<slug:slug>/next", api.next_assignment_view, name="api-next"),
    path(
        "api/ratings/rate/<slug:slug>/assignments/<uuid:assignment>/judgment",
        api.submit_judgment_view, name="api-submit",
    ),
    # Staff API.
    path("api/ratings/", include(router.urls)),
]
