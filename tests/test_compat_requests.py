"""rpcclient.compat.requests against requests itself: same calls, same answers, same errors.

Every scenario is one small function taking the module (``requests`` or the
shim) and a base URL; it runs with both against the same loopback server
and the results are compared. Fault scenarios compare exception classes: the
shim's exception must be an instance of the class requests raised, and one
of the shim's own (nothing foreign escapes). The documented differences
(redirects, unsupported arguments, body timeouts) have tests of their own.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import ssl
import textwrap
from collections.abc import Callable
from typing import Any

import gevent
import pytest
import requests as real
import trustme

import rpcclient
import rpcclient.compat.requests as shim

from .conftest import (
    RawServer,
    free_port,
    http_response,
    keepalive_answering,
    read_request,
    run_python,
    silent,
)

MODULES = {"requests": real, "shim": shim}
Scenario = Callable[[Any, str], Any]


# -- the server ------------------------------------------------------------------------


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Echo what arrived as JSON, plus a few fixed answers by path."""
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read()
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response(f"{code} Custom Reason", [("Content-Type", "text/plain")])
        return [b"status body"]
    if path == "/redirect":
        start_response("302 Found", [("Location", "/echo"), ("Content-Length", "0")])
        return [b""]
    if path == "/latin1":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["café".encode("latin-1")]
    if path == "/utf8-json":
        start_response("200 OK", [("Content-Type", "application/vnd.thing")])
        return [json.dumps({"name": "ünï"}, ensure_ascii=False).encode("utf-8")]
    if path == "/not-json":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{not json"]
    if path == "/dup":
        start_response("200 OK", [("X-Dup", "a"), ("X-Dup", "b"), ("Content-Type", "text/x")])
        return [b"dup"]
    if path == "/gzip":
        payload = gzip.compress(b"compressed " * 100)
        start_response("200 OK", [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")])
        return [payload]
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("RAW_URI", path).split("?")[0],
        "query": environ.get("QUERY_STRING", ""),
        "body": body.decode("latin-1"),
        "content_type": environ.get("CONTENT_TYPE") or None,
        "authorization": environ.get("HTTP_AUTHORIZATION"),
        "x": {k: v for k, v in environ.items() if k.startswith("HTTP_X_")},
    }
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8")])
    return [json.dumps(seen).encode()]


@pytest.fixture
def url(wsgi_server: Any) -> str:
    return str(wsgi_server(app))


@pytest.fixture(autouse=True)
def _fresh_shim_session() -> Any:
    yield
    # the module functions share one pooled session: close it between tests
    # so that no connection outlives its test's server
    if shim._default is not None:
        shim._default.close()


def summary(r: Any) -> dict[str, Any]:
    out = {
        "status": r.status_code,
        "reason": r.reason,
        "ok": r.ok,
        "bool": bool(r),
        "content": r.content,
        "text": r.text,
        "encoding": r.encoding,
        "url": r.url,
        "content_type": r.headers.get("content-type"),
        "x_dup": r.headers.get("X-DUP"),
        "redirect": r.is_redirect,
    }
    try:
        out["json"] = r.json()
    except real.exceptions.JSONDecodeError as exc:  # both raise a subclass of it
        out["json"] = ("JSONDecodeError", exc.msg, exc.pos)
    return out


# -- answers: the same for both ----------------------------------------------------------


def post_json(rq: Any, url: str) -> Any:
    return summary(rq.post(url + "/echo", json={"a": [1, 2], "ü": None}, timeout=5))


def get_params(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/echo", params={"q": "x y&z", "n": [1, 2], "none": None}))


def get_params_appended(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/echo?a=1", params=[("b", "2"), ("b", "3")], timeout=(2, 5)))


def post_form(rq: Any, url: str) -> Any:
    return summary(rq.post(url + "/echo", data={"k": "v w", "list": ["a", "b"]}))


def put_bytes(rq: Any, url: str) -> Any:
    return summary(rq.put(url + "/echo", data=b"\x00\xffraw", headers={"X-Kind": "bytes"}))


def post_text(rq: Any, url: str) -> Any:
    return summary(rq.post(url + "/echo", data="ünïcode text"))


def post_chunks(rq: Any, url: str) -> Any:
    return summary(rq.post(url + "/echo", data=(c for c in [b"one,", b"two,", b"three"])))


def post_file(rq: Any, url: str) -> Any:
    return summary(rq.post(url + "/echo", data=io.BytesIO(b"file contents")))


def delete_and_patch(rq: Any, url: str) -> Any:
    return [summary(rq.delete(url + "/echo")), summary(rq.patch(url + "/echo", data=b"p"))]


def head_request(rq: Any, url: str) -> Any:
    r = rq.head(url + "/echo")
    return (r.status_code, r.content, r.headers["content-type"])


def quoted_path(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/echo/a b/ü"))


def basic_auth(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/echo", auth=("user", "pässword")))


def credentials_in_url(rq: Any, url: str) -> Any:
    return summary(rq.get(url.replace("http://", "http://us%40er:pw@") + "/echo"))


def session_state(rq: Any, url: str) -> Any:
    with rq.Session() as s:
        s.headers["X-Token"] = "abc"
        s.headers["X-Removed"] = "gone"
        s.params = {"from_session": "1"}
        s.auth = ("s", "pw")
        first = summary(s.get(url + "/echo", headers={"X-Other": "1", "X-Removed": None}))
        second = summary(s.post(url + "/echo", json=[1], params={"p": "2"}))
    return [first, second]


def client_error(rq: Any, url: str) -> Any:
    r = rq.get(url + "/status/404")
    with pytest.raises(rq.exceptions.HTTPError) as info:
        r.raise_for_status()
    return summary(r), str(info.value), info.value.response is r


def server_error(rq: Any, url: str) -> Any:
    r = rq.post(url + "/status/503", data=b"x")
    with pytest.raises(rq.HTTPError) as info:
        r.raise_for_status()
    return summary(r), str(info.value)


def no_content(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/status/204"))


def latin1_text(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/latin1"))


def json_without_charset(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/utf8-json"))


def invalid_json(rq: Any, url: str) -> Any:
    r = rq.get(url + "/not-json")
    with pytest.raises(rq.exceptions.JSONDecodeError) as info:
        r.json()
    assert isinstance(info.value, json.JSONDecodeError)
    return info.value.msg, info.value.pos, summary(r)


def repeated_headers(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/dup"))


def redirect_returned(rq: Any, url: str) -> Any:
    r = rq.get(url + "/redirect", allow_redirects=False)
    return r.status_code, r.headers["location"], r.is_redirect, r.ok


def gzip_decoded(rq: Any, url: str) -> Any:
    return summary(rq.get(url + "/gzip", headers={"Accept-Encoding": "gzip"}))


def response_as_context_manager(rq: Any, url: str) -> Any:
    with rq.request("GET", url + "/echo", timeout=3) as r:
        return summary(r)


SCENARIOS: list[Scenario] = [
    post_json,
    get_params,
    get_params_appended,
    post_form,
    put_bytes,
    post_text,
    post_chunks,
    post_file,
    delete_and_patch,
    head_request,
    quoted_path,
    basic_auth,
    credentials_in_url,
    session_state,
    client_error,
    server_error,
    no_content,
    latin1_text,
    json_without_charset,
    invalid_json,
    repeated_headers,
    redirect_returned,
    gzip_decoded,
    response_as_context_manager,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_same_answers_as_requests(url: str, scenario: Scenario) -> None:
    expected = scenario(real, url)
    assert scenario(shim, url) == expected


def test_response_details(url: str) -> None:
    r = shim.get(url + "/echo", params={"a": "1"})
    assert type(r) is shim.Response and repr(r) == "<Response [200]>"
    assert r.elapsed.total_seconds() > 0
    assert r.history == []
    assert r.headers["CONTENT-TYPE"] == r.headers["content-type"]
    r.encoding = "ascii"
    assert r.text == r.content.decode("ascii")


# -- faults: the same exception classes --------------------------------------------------


def outcome(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    pytest.fail("no exception raised")


def same_error(scenario: Callable[[Any], Any], *, sent: bool = True) -> BaseException:
    """Run with both; the shim's error must be one of its own and an instance of requests'.

    ``sent``: the error comes from the transport, with the rpcclient error as
    its cause (input errors are raised before that).
    """
    expected = outcome(lambda: scenario(real))
    got = outcome(lambda: scenario(shim))
    assert type(got).__module__ == "rpcclient.compat.requests", repr(got)
    assert isinstance(got, type(expected)), f"requests: {expected!r}; shim: {got!r}"
    if sent:
        assert isinstance(got.__cause__, rpcclient.RPCError), repr(got.__cause__)
    return got


def test_connection_refused() -> None:
    target = f"http://127.0.0.1:{free_port()}/x"
    err = same_error(lambda rq: rq.get(target, timeout=2))
    assert isinstance(err, shim.ConnectionError) and not isinstance(err, shim.Timeout)


def test_read_timeout(raw_server: Any) -> None:
    srv: RawServer = raw_server(silent)
    err = same_error(lambda rq: rq.post(srv.url + "/x", data=b"hi", timeout=(2, 0.2)))
    assert isinstance(err, shim.ReadTimeout)


def test_server_closes_before_answering(raw_server: Any) -> None:
    def close(sock: Any, server: RawServer) -> None:
        read_request(sock)

    srv: RawServer = raw_server(close)
    same_error(lambda rq: rq.post(srv.url + "/x", data=b"hi", timeout=2))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
    ids=["content-length", "chunked"],
)
def test_truncated_body(raw_server: Any, answer: bytes) -> None:
    def truncate(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(answer)

    srv: RawServer = raw_server(truncate)
    err = same_error(lambda rq: rq.get(srv.url + "/x", timeout=2))
    assert isinstance(err, real.exceptions.ChunkedEncodingError)


@pytest.mark.parametrize("status_line", [b"HTTX/1.1 200 OK", b"HTTP/1.1 abc OK", b"garbage"])
def test_malformed_status_line(raw_server: Any, status_line: bytes) -> None:
    def bad(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(status_line + b"\r\nContent-Length: 1\r\n\r\nx")

    srv: RawServer = raw_server(bad)
    err = same_error(lambda rq: rq.get(srv.url + "/x", timeout=2))
    assert isinstance(err, shim.ConnectionError)


@pytest.mark.parametrize(
    "bad_url", ["127.0.0.1/x", "ftp://127.0.0.1/", "http://", "http://a b/", "http://[::1/"]
)
def test_invalid_urls(bad_url: str) -> None:
    same_error(lambda rq: rq.get(bad_url), sent=False)


@pytest.mark.parametrize("headers", [{"X": "a\nb"}, {"X": 1}, {"X": " a"}, {"X": "a\rb"}])
def test_invalid_headers(url: str, headers: dict[str, Any]) -> None:
    err = same_error(lambda rq: rq.get(url + "/echo", headers=headers), sent=False)
    assert isinstance(err, ValueError)


def test_json_that_cannot_be_encoded(url: str) -> None:
    same_error(lambda rq: rq.post(url + "/echo", json={"x": math.nan}), sent=False)


def test_tls_verification(raw_server: Any, tmp_path: Any) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    srv: RawServer = raw_server(
        keepalive_answering(lambda h, b: http_response(b"tls", content_type="text/plain")),
        ssl_context=ctx,
    )
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    err = same_error(lambda rq: rq.get(srv.url + "/x", timeout=5))
    assert isinstance(err, shim.SSLError)
    for rq in MODULES.values():
        assert rq.get(srv.url + "/x", verify=ca_file, timeout=5).text == "tls"
    with shim.Session() as s:
        s.verify = ca_file
        assert s.get(srv.url + "/y").text == "tls"


# -- the documented differences ----------------------------------------------------------


def test_redirects_are_not_followed(url: str) -> None:
    assert real.get(url + "/redirect").url.endswith("/echo")  # requests follows
    with pytest.raises(shim.RedirectNotFollowed, match="allow_redirects=False") as info:
        shim.get(url + "/redirect")
    assert info.value.response.status_code == 302
    assert isinstance(info.value, real.exceptions.RequestException)


def test_a_slow_body_is_a_read_timeout(raw_server: Any) -> None:
    """requests bounds each recv (and calls a body timeout a ConnectionError);
    the shim bounds the whole answer."""

    def drip(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                sock.sendall(b"x")
                gevent.sleep(0.05)

    srv: RawServer = raw_server(drip)
    started = gevent.get_hub().loop.now()
    with pytest.raises(shim.ReadTimeout):
        shim.get(srv.url, timeout=(2, 0.3))
    gevent.get_hub().loop.update_now()
    assert gevent.get_hub().loop.now() - started < 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"proxies": {"http": "http://proxy:3128"}},
        {"stream": True},
        {"files": {"f": b"x"}},
        {"cookies": {"c": "1"}},
        {"hooks": {"response": print}},
        {"auth": real.auth.HTTPDigestAuth("u", "p")},
        {"headers": {"Host": "other.example"}},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_unsupported_arguments_raise_before_sending(
    raw_server: Any, kwargs: dict[str, Any]
) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b"")))
    name = next(iter(kwargs))
    with pytest.raises(shim.UnsupportedArgument, match=name):
        shim.get(srv.url, **kwargs)
    assert srv.connections == 0
    assert isinstance(shim.UnsupportedArgument("x"), NotImplementedError)
    assert not issubclass(shim.UnsupportedArgument, real.exceptions.RequestException)


def test_session_refuses_unsupported_attributes() -> None:
    s = shim.Session()
    with pytest.raises(AttributeError):
        s.proxies = {"http": "http://proxy:3128"}  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        s.mount("http://", object())  # type: ignore[attr-defined]
    s.trust_env = False  # accepted: the environment is never read anyway
    s.close()


def test_pool_timeout_is_a_connection_error(raw_server: Any) -> None:
    srv: RawServer = raw_server(silent)
    with shim.Session(pool_size=1) as s:
        busy = gevent.spawn(s.get, srv.url, timeout=(5, 5))
        gevent.sleep(0.1)
        try:
            with pytest.raises(shim.PoolTimeout) as info:
                s.get(srv.url, timeout=(0.1, 5))
        finally:
            busy.kill()
    err = info.value
    assert isinstance(err, real.exceptions.ConnectionError)
    assert isinstance(err, real.exceptions.Timeout)
    assert srv.connections == 1


def test_response_too_large(url: str) -> None:
    with shim.Session(max_response_size=10) as s:
        with pytest.raises(shim.ResponseTooLarge):
            s.get(url + "/echo")
        with pytest.raises(shim.ResponseTooLarge):
            s.get(url + "/gzip", headers={"Accept-Encoding": "gzip"})


def test_unknown_content_encoding(raw_server: Any) -> None:
    srv: RawServer = raw_server(
        keepalive_answering(lambda h, b: http_response(b"xx", headers=[("Content-Encoding", "br")]))
    )
    with pytest.raises(shim.ContentDecodingError, match="br"):
        shim.get(srv.url)


def test_caller_timeout_propagates_unchanged(raw_server: Any) -> None:
    srv: RawServer = raw_server(silent)
    mine = gevent.Timeout(0.2)
    with pytest.raises(gevent.Timeout) as info:
        with mine:
            shim.get(srv.url)
    assert info.value is mine


def test_connections_are_pooled_and_nothing_leaks(raw_server: Any, no_fd_leak: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b"ok")))
    no_fd_leak.mark()
    with shim.Session() as s:
        for _ in range(5):
            assert s.get(srv.url + "/x").content == b"ok"
        for _ in range(3):
            assert shim.post(srv.url + "/y", data=b"z").content == b"ok"
    shim._session().close()
    assert srv.connections == 2  # one for the Session, one for the module functions
    srv.stop()


# -- the exception tree ------------------------------------------------------------------


def test_every_exception_is_also_requests_own() -> None:
    pairs = {
        "RequestException": "RequestException",
        "ConnectionError": "ConnectionError",
        "SSLError": "SSLError",
        "Timeout": "Timeout",
        "ConnectTimeout": "ConnectTimeout",
        "ReadTimeout": "ReadTimeout",
        "HTTPError": "HTTPError",
        "MissingSchema": "MissingSchema",
        "InvalidSchema": "InvalidSchema",
        "InvalidURL": "InvalidURL",
        "InvalidHeader": "InvalidHeader",
        "ChunkedEncodingError": "ChunkedEncodingError",
        "ContentDecodingError": "ContentDecodingError",
        "InvalidJSONError": "InvalidJSONError",
        "JSONDecodeError": "JSONDecodeError",
        "PoolTimeout": "ConnectionError",
        "ResponseTooLarge": "RequestException",
        "RedirectNotFollowed": "RequestException",
    }
    assert shim.REQUESTS_INSTALLED
    for ours, theirs in pairs.items():
        cls = getattr(shim.exceptions, ours)
        assert cls is getattr(shim, ours)
        assert issubclass(cls, getattr(real.exceptions, theirs)), ours
        assert issubclass(cls, shim.RequestException), ours
    from rpcclient.compat.requests.exceptions import Timeout

    assert Timeout is shim.Timeout


STANDALONE = textwrap.dedent(
    """
    import sys
    sys.modules["requests"] = None  # as if requests were not installed
    from gevent.pywsgi import WSGIServer
    from rpcclient.compat import requests

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"ok": true}']

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    url = "http://127.0.0.1:%d/" % server.server_port
    assert not requests.REQUESTS_INSTALLED
    assert requests.get(url, timeout=5).json() == {"ok": True}
    assert issubclass(requests.ConnectTimeout, requests.exceptions.ConnectionError)
    assert issubclass(requests.ConnectTimeout, requests.exceptions.Timeout)
    assert issubclass(requests.InvalidURL, ValueError)
    assert issubclass(requests.RequestException, OSError)
    try:
        requests.get("nothttp://x")
    except requests.exceptions.InvalidSchema:
        pass
    r = requests.get(url + "404")
    try:
        requests.Response(404, "Not Found", headers=r.headers, content=b"", url=url,
                          elapsed=r.elapsed).raise_for_status()
    except requests.exceptions.HTTPError as exc:
        assert exc.response.status_code == 404
    try:
        requests.Response(200, "OK", headers=r.headers, content=b"{", url=url,
                          elapsed=r.elapsed).json()
    except requests.exceptions.JSONDecodeError as exc:
        assert exc.pos == 1 and exc.response is not None
    requests._session().close()
    server.stop()
    print("standalone ok")
    """
)


def test_works_without_requests_installed() -> None:
    result = run_python(STANDALONE, flags=("-W", "error"))
    assert result.returncode == 0, result.stderr
    assert "standalone ok" in result.stdout
