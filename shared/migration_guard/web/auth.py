"""The dashboard's login and logout: the bearer token entered once on a form (or a one-time login
code from ``serve --demo``'s link) opens a server-side session kept in an HttpOnly, SameSite=Strict
cookie. Every POST carries a CSRF token: the login forms a double-submit cookie's value, a logged-in
form its session's. No token ever appears in a URL; the forms post to the same origin only."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from migration_guard.errors import StoreUnavailable
from migration_guard.web import session as sessions_mod
from migration_guard.web.render import error_page, page, secure
from migration_guard.web.session import COOKIE, LOGIN_COOKIE, Session, Sessions, same_secret

HOME = "/ui/matrix"
LOGIN = "/ui/login"


async def form_of(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (the body size is bounded by the app's BodyLimit)."""
    body = (await request.body()).decode("utf-8", "replace")
    fields = parse_qs(body, keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}


def same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; one from another site is refused (besides the
    CSRF token, which such a page cannot read)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def redirect(path: str) -> RedirectResponse:
    return secure(RedirectResponse(path, status_code=303))


class Auth:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def current(self, request: Request) -> Session | None:
        """The request's session, None without a valid one (raises StoreUnavailable)."""
        return await self.sessions.get(request.cookies.get(COOKIE))

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def login_form(self, request: Request, status: int = 200, message: str = "") -> Response:
        csrf = secrets.token_urlsafe(24)
        response = page("login.html", status, csrf=csrf, message=message)
        self.set_cookie(request, response, LOGIN_COOKIE, csrf, 600)
        return response

    async def signed_in(self, request: Request, token_digest: str) -> Response:
        opened = await self.sessions.open(token_digest)
        response = redirect(HOME)
        self.set_cookie(request, response, COOKIE, opened.id, self.sessions.ttl_s)
        response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def forged(self, request: Request, form: dict[str, str]) -> bool:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        return not same_origin(request) or not same_secret(form.get("csrf"), expected)


def router(auth: Auth) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    @web.get(LOGIN)
    async def login_page(request: Request) -> Response:
        try:
            if await auth.current(request) is not None:
                return redirect(HOME)
        except StoreUnavailable as exc:
            return error_page(exc, title="Cannot sign in now")
        return auth.login_form(request)

    @web.post(LOGIN)
    async def login(request: Request) -> Response:
        form = await form_of(request)
        if auth.forged(request, form):
            return auth.login_form(request, 403, "The form expired or came from another page; sign in again.")
        token_digest = auth.sessions.token_digest(form.get("token", ""))
        if token_digest is None:
            return auth.login_form(
                request, 401, "That token is not one of the service's MIGRATION_GUARD_API_TOKENS."
            )
        try:
            return await auth.signed_in(request, token_digest)
        except StoreUnavailable as exc:
            return error_page(exc, title="Cannot sign in now")

    @web.get(LOGIN + "/once")
    async def once_page(request: Request) -> Response:
        """The one-time link's page: a button that posts the code (a link previewer that fetches
        the URL does not use the code up)."""
        code = request.query_params.get("code", "")[:128]
        csrf = secrets.token_urlsafe(24)
        response = page("once.html", csrf=csrf, code=code)
        auth.set_cookie(request, response, LOGIN_COOKIE, csrf, 600)
        return response

    @web.post(LOGIN + "/once")
    async def once(request: Request) -> Response:
        form = await form_of(request)
        if auth.forged(request, form):
            return auth.login_form(request, 403, "The form expired or came from another page; sign in again.")
        try:
            token_digest = await auth.sessions.redeem(form.get("code", ""))
            if token_digest is None:
                return auth.login_form(
                    request,
                    401,
                    "That one-time login link was used already or has expired (it lasts "
                    f"{sessions_mod.CODE_TTL_S // 60} minutes); sign in with your API token.",
                )
            return await auth.signed_in(request, token_digest)
        except StoreUnavailable as exc:
            return error_page(exc, title="Cannot sign in now")

    @web.post("/ui/logout")
    async def logout(request: Request) -> Response:
        form = await form_of(request)
        try:
            current = await auth.current(request)
            if current is None:
                return redirect(LOGIN)
            if not same_origin(request) or not same_secret(form.get("csrf"), current.csrf):
                return page(
                    "error.html",
                    403,
                    session=current,
                    title="Not signed out",
                    code="csrf",
                    message="The sign-out form was not this session's (or came from another page); "
                    "nothing was done.",
                )
            await auth.sessions.close(current.id)
        except StoreUnavailable as exc:
            return error_page(exc, title="Cannot sign out now")
        response = redirect(LOGIN)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return web
