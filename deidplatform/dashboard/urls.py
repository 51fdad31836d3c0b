from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("live/overview.json", views.live_overview, name="live-overview"),
    path("live/celery.json", views.live_celery, name="live-celery"),
    path("rounds/start", views.start_round, name="start-round"),
    path("rounds/<uuid:round_id>/", views.round_page, name="round"),
    path("live/rounds/<uuid:round_id>.json", views.live_round, name="live-round"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/gallery/", views.gallery, name="gallery"),
    path("jobs/<uuid:job_id>/", views.job_page, name="job"),
    path("jobs/<uuid:job_id>/cancel", views.cancel_job, name="cancel-job"),
    path("campaigns/<int:campaign_id>/", views.campaign_page, name="campaign"),
    path("campaigns/<int:campaign_id>/raters/<int:rater_id>/block", views.block_rater,
         name="block-rater"),
    path("campaigns/<int:campaign_id>/raters/<int:rater_id>/unblock", views.unblock_rater,
         name="unblock-rater"),
    path("proxy/", views.proxy_page, name="proxy"),
    path("proxy/<uuid:version_id>/promote", views.promote, name="promote"),
    path("proxy/rollback", views.rollback, name="rollback"),
    path("img/<uuid:image_id>/<str:variant>", views.image, name="image"),
]
