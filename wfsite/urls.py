from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="workflow/registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("ops/", include("workflow.console_urls")),
    path("api/v1/", include("workflow.api.urls")),
    path("", include("workflow.health")),
    path("", include("workflow.prom")),
    path("", include("workflow.urls")),
]
