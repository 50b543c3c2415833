"""The HTTP JSON API (``api/v1/``): mount ``workflow.api.urls``. See the README's API section."""
