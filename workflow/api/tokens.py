"""API tokens: made, checked and revoked here, for the command, the admin and the API's auth."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone

from ..models import ApiToken

TOKEN_PREFIX = "wf_"
LAST_USED_RESOLUTION = timedelta(seconds=60)  # at most one write per token a minute, however busy


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(user: Any, *, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``: the row (digest only) and the raw token, which is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=raw[:10], digest=digest(raw), created_at=timezone.now()
    )
    return token, raw


def authenticate(raw: str) -> Any | None:
    """The active user a raw token belongs to, or None (unknown, revoked, or user inactive)."""
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = ApiToken.objects.usable().select_related("user").filter(digest=digest(raw)).first()
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def rename(token_pk: int, name: str) -> None:
    ApiToken.objects.filter(pk=token_pk).update(name=name[:100])


def revoke(tokens: Any) -> int:
    """Revoke tokens (a queryset); revoked tokens stay listed, with the time they stopped working."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
