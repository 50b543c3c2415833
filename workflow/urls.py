from __future__ import annotations

from django.urls import path

from . import views

app_name = "workflow"

urlpatterns = [
    path("", views.overview, name="overview"),
]
