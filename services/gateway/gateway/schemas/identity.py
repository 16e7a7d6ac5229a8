"""Accounts, tokens and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, EmailStr, Field

from .common import Strict, examples
from .credits import Credits


class Credentials(Strict):
    email: EmailStr = Field(max_length=320, examples=["ada@example.com"])
    password: str = Field(min_length=8, max_length=256, examples=["correct horse battery staple"])


class RefreshRequest(Strict):
    model_config = examples({"refresh_token": "q1w2e3r4t5y6u7i8o9p0"}, extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=512)


_USER_EXAMPLE = {
    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b02",
    "email": "ada@example.com",
    "role": "user",
    "created_at": "2026-11-22T09:59:00Z",
}


class UserOut(BaseModel):
    model_config = examples(_USER_EXAMPLE)

    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]
    created_at: datetime


_TOKENS_EXAMPLE = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl",
    "refresh_token": "q1w2e3r4t5y6u7i8o9p0",
    "token_type": "bearer",
    "expires_in": 900,
}


class TokensOut(BaseModel):
    model_config = examples(_TOKENS_EXAMPLE)

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires")


class SignupOut(TokensOut):
    model_config = examples({**_TOKENS_EXAMPLE, "user": _USER_EXAMPLE})

    user: UserOut


class MeOut(BaseModel):
    model_config = examples({"user": _USER_EXAMPLE, "credits": {"available": 15, "reserved": 5}})

    user: UserOut
    credits: Credits


class ApiKeyCreate(Strict):
    model_config = examples({"name": "ci"}, extra="forbid")

    name: str = Field("default", min_length=1, max_length=100)


_API_KEY_EXAMPLE = {
    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
    "name": "ci",
    "prefix": "gi_Xk3v9Qa",
    "created_at": "2026-11-22T10:00:00Z",
    "last_used_at": None,
}


class ApiKeyOut(BaseModel):
    model_config = examples(_API_KEY_EXAMPLE)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    created_at: datetime
    last_used_at: datetime | None = Field(None, description="Last use, to the minute")


class ApiKeyCreated(ApiKeyOut):
    model_config = examples({**_API_KEY_EXAMPLE, "key": "gi_Xk3v9QaZr0m7Hc2pLw8sT1uY4bN6eD5fG3hJ9kA0qWx"})

    key: str = Field(description="The secret: shown once, never again")
