"""Registry authentication: `WWW-Authenticate` challenges, Basic, and the Bearer token flow.

A registry answers an unauthenticated request with 401 and a challenge:

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"

For `Basic` the client resends with the user's credentials. For `Bearer` it GETs the
realm with `service` and `scope` (and the credentials as Basic, if it has some), takes
`token` (or `access_token`) from the JSON answer, and resends with `Authorization:
Bearer <token>`. Tokens are cached per scope for the life of one `Authorizer` (one
pull or push), so parallel layer transfers fetch a token once.

    >>> parse_challenges('Bearer realm="https://a/token",service="reg"')
    [Challenge(scheme='bearer', params={'realm': 'https://a/token', 'service': 'reg'})]
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass, field

import grpc
import httpx

from api.errors import PyswarmError

_TOKEN = re.compile(
    r'[\s,]*(?:(?P<key>[\w.-]+)\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s,]*)|(?P<scheme>[\w.-]+))'
)


class Unauthorized(PyswarmError):
    """The registry refused the credentials (or their absence)."""

    status = grpc.StatusCode.UNAUTHENTICATED


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str  # or an identity token

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value: one or more challenges (RFC 7235), each a
    scheme followed by `key=value` or `key="quoted value"` parameters."""
    challenges: list[Challenge] = []
    for match in _TOKEN.finditer(header):
        if match.group("scheme"):
            challenges.append(Challenge(match.group("scheme").lower(), {}))
        elif match.group("key") and challenges:
            value = match.group("value")
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            challenges[-1].params[match.group("key").lower()] = value
    return challenges


def scope_for(repository: str, *, push: bool) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


class Authorizer:
    """The `Authorization` header for a registry, learned from its challenges."""

    def __init__(self, credentials: Credentials | None, *, scope: str) -> None:
        self.credentials = credentials
        self.scope = scope
        self._challenge: Challenge | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def header(self) -> str | None:
        """What to send before any 401: Basic, or a Bearer token already fetched."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self.credentials.basic() if self.credentials else None
        token = self._tokens.get(self.scope)
        return f"Bearer {token}" if token else None

    def learn(self, client: httpx.Client, response: httpx.Response) -> bool:
        """Handle a 401: remember its challenge and fetch a token if it asks for one.
        → whether a retry may succeed (False when we have nothing new to offer)."""
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        usable = [c for c in challenges if c.scheme in ("basic", "bearer")]
        if not usable:
            return False
        challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
        with self._lock:
            previous = self.header()
            self._challenge = challenge
            if challenge.scheme == "bearer":
                self._tokens[self.scope] = fetch_token(
                    client, challenge, self.credentials, scope=self.scope
                )
            return self.header() not in (None, previous)


def fetch_token(
    client: httpx.Client, challenge: Challenge, credentials: Credentials | None, *, scope: str
) -> str:
    """The Bearer token flow: GET realm?service=&scope= (Basic credentials if any)."""
    realm = challenge.params.get("realm")
    if not realm:
        raise Unauthorized("unauthorized: the registry's Bearer challenge names no realm")
    params = {"service": challenge.params.get("service", "")}
    if scope:
        params["scope"] = scope
    headers = {"Authorization": credentials.basic()} if credentials else {}
    try:
        response = client.get(realm, params=params, headers=headers)
    except httpx.HTTPError as error:
        raise Unauthorized(f"cannot get a token from {realm}: {error}") from None
    if response.status_code in (401, 403):
        raise Unauthorized("unauthorized: incorrect username or password")
    if response.status_code != 200:
        raise Unauthorized(f"token server {realm} answered {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise Unauthorized(f"token server {realm} answered with invalid JSON") from None
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unauthorized(f"token server {realm} gave no token")
    return token
