"""The audited one-time override: the request, the approval, the answer (``OverrideBody``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from migration_guard.api.models import NODE_NAME, Answer

#: a person's name as the CLI ($SUDO_USER/$USER) or the bot (a Slack user) gives it: one line
PERSON = re.compile(r"\A[^\x00-\x1f\x7f]{1,64}\Z")
#: an override's lifetime, counted from the request: one minute to one day (default 15 minutes)
TTL_MIN_S, TTL_MAX_S, TTL_DEFAULT_S = 60, 86_400, 900


def _person(value: str) -> str:
    value = value.strip()
    if not PERSON.match(value):
        raise ValueError("a name of 1 to 64 characters on one line is required")
    return value


class OverrideRequest(BaseModel):
    vmid: int = Field(ge=100, le=999_999_999, strict=True)
    target: str
    reason: str = Field(min_length=1, max_length=500, description="why the guard's verdict is wrong here")
    ttl_s: int = Field(
        TTL_DEFAULT_S, ge=TTL_MIN_S, le=TTL_MAX_S, strict=True, description="lifetime from now"
    )
    requested_by: str = Field(description="who asks (a second person must approve)")

    @field_validator("target")
    @classmethod
    def _node(cls, value: str) -> str:
        if not NODE_NAME.match(value):
            raise ValueError(f"{value[:70]!r} is not a Proxmox node name")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("a reason is required (what the operator knows that the guard does not)")
        return value

    @field_validator("requested_by")
    @classmethod
    def _who(cls, value: str) -> str:
        return _person(value)


class OverrideApproval(BaseModel):
    approved_by: str = Field(description="who approves (not the requester)")

    @field_validator("approved_by")
    @classmethod
    def _who(cls, value: str) -> str:
        return _person(value)


class OverrideRejection(BaseModel):
    rejected_by: str

    @field_validator("rejected_by")
    @classmethod
    def _who(cls, value: str) -> str:
        return _person(value)


class OverrideEvent(BaseModel):
    status: Literal["pending", "approved", "spent", "expired", "rejected"]
    at: str
    by: str | None = Field(description="the person (or 'decision <id>' for spent, null for expired)")


class OverrideBody(Answer):
    """One override: allows exactly the next denied decision of ``vmid`` to ``target`` once
    approved, within its lifetime; ``history`` has every state change."""

    id: str = Field(description="sortable id (ULID)")
    vmid: int
    target: str
    reason: str
    requested_by: str
    approved_by: str | None
    status: Literal["pending", "approved", "spent", "expired", "rejected"]
    created_at: str
    expires_at: str
    spent_at: str | None
    decision_id: str | None = Field(description="the decision that spent it")
    ttl_s: int
    history: list[OverrideEvent]


class OverridesBody(BaseModel):
    """The overrides, newest first."""

    overrides: list[OverrideBody]
