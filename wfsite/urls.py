from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The demo has a login page of its own (settings.LOGIN_URL = "login"), drawn by the site's
    # templates/registration/login.html over the app's; a site without one uses "workflow:login".
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("api/v1/", include("workflow.api.urls")),  # the JSON API, OpenAPI at api/v1/openapi.json
    path("", include("workflow.health")),  # /healthz and /readyz
    path("", include("workflow.prom")),  # /metrics
    path("", include("workflow.urls")),
]
