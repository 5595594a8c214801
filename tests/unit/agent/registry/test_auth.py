"""WWW-Authenticate parsing and the Basic/Bearer flows (httpx.MockTransport)."""

from __future__ import annotations

import httpx
import pytest

from agent.registry.auth import Authorizer, Credentials, Unauthorized, parse_challenges, scope_for
from agent.registry.client import Endpoint, RegistryClient

from .fake import FakeRegistry, digest_of

pytestmark = pytest.mark.unit


def test_parse_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:team/app:pull,push",
    }


def test_parse_basic_unquoted_escaped_and_several() -> None:
    challenges = parse_challenges('Basic realm="a \\"b\\"", Bearer realm=https://t/x, error=bad')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": 'a "b"'}
    assert challenges[1].params == {"realm": "https://t/x", "error": "bad"}


def test_parse_garbage_gives_no_parameters() -> None:
    assert parse_challenges("") == []
    assert parse_challenges("Negotiate") == [parse_challenges("negotiate")[0]]


def test_scope() -> None:
    assert scope_for("library/busybox", push=False) == "repository:library/busybox:pull"
    assert scope_for("a/b", push=True) == "repository:a/b:pull,push"


def client_for(
    registry: FakeRegistry, *, credentials: Credentials | None, push: bool = False
) -> RegistryClient:
    endpoint = Endpoint.of("registry.example", insecure=())
    return RegistryClient(
        endpoint, "team/app", credentials=credentials, push=push, transport=registry.transport
    )


def test_bearer_token_flow_sends_service_scope_and_credentials() -> None:
    registry = FakeRegistry(auth="bearer")
    with client_for(registry, credentials=Credentials("alice", "s3cret"), push=True) as client:
        client.ping()
        assert not client.has_blob(digest_of(b"absent"))
    [params] = registry.token_requests  # fetched once, then reused
    assert params["service"] == "fake"
    assert params["scope"] == "repository:team/app:pull,push"


def test_bearer_anonymous_token() -> None:
    registry = FakeRegistry(auth="bearer")
    with client_for(registry, credentials=None) as client:
        client.ping()


def test_bearer_with_wrong_password_is_unauthorized() -> None:
    registry = FakeRegistry(auth="bearer")
    with (
        client_for(registry, credentials=Credentials("alice", "wrong")) as client,
        pytest.raises(Unauthorized, match="incorrect username or password"),
    ):
        client.ping()


def test_basic_auth_retries_once_with_credentials() -> None:
    registry = FakeRegistry(auth="basic")
    with client_for(registry, credentials=Credentials("alice", "s3cret")) as client:
        client.ping()
        client.ping()
    assert registry.log == ["GET /v2/", "GET /v2/", "GET /v2/"]  # the 401, then with Basic


def test_basic_auth_without_credentials_is_unauthorized() -> None:
    registry = FakeRegistry(auth="basic")
    with (
        client_for(registry, credentials=None) as client,
        pytest.raises(Unauthorized, match=r"^unauthorized: authentication required$"),
    ):
        client.ping()


def test_authorizer_without_challenge_sends_nothing() -> None:
    assert Authorizer(Credentials("a", "b"), scope="").header() is None
    response = httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})
    with httpx.Client() as http:
        assert not Authorizer(None, scope="").learn(http, response)
