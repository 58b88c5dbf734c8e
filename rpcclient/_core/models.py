"""The values that cross the transport seam: Endpoint, Request, Response.

A :class:`Request` is fully prepared and validated before a transport sees it:
transports never check names or headers, they only move bytes. A
:class:`Response` is the complete answer, body read to the end.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Final, Union
from urllib.parse import urlsplit

from ..exceptions import InvalidRequest

__all__ = ["Endpoint", "Headers", "Request", "Response"]

#: bytes-likes go out with a Content-Length; an iterable of bytes-likes
#: (a generator, a file read in chunks) goes out chunked.
Body = Union[bytes, bytearray, memoryview, Iterable[bytes]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 token for header names; values: visible ASCII, space, tab, obs-text
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_METHOD_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: a request target is ASCII without spaces or controls (RFC 9112 3.2)
_TARGET = re.compile(r"[!-~]+\Z")
#: a path as it may appear in a request line: RFC 3986 pchar and "/" (ASCII
#: only; a "%" only as the start of a percent-encoded octet)
PATH_TEXT: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*\Z")
# a host name as it may appear in Host: (ASCII letters, digits, '-', '.', '_')
_HOST_NAME = re.compile(r"[a-z0-9_\-.]+\Z")
#: header fields the transport writes itself: the message's framing and the
#: connection's management. A caller's copy would go out beside the
#: transport's own (two Content-Length fields, CL and TE together): refused.
FRAMING_HEADERS: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
    }
)


def reduce_by_init_fields(obj: Any) -> tuple[Any, ...]:
    """``__reduce__`` of a dataclass: rebuilt by its constructor, from its init fields.

    Compiled (mypyc) dataclasses lose the copy and pickle support that
    ``dataclasses`` gives frozen and slotted classes; the policies and models
    that users copy or send to other processes say it this way instead.
    """
    return (type(obj), tuple(getattr(obj, f.name) for f in fields(obj) if f.init))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed base URL: ``http://host:port/base/path``.

    ``key`` identifies a connection pool (scheme, host, port); ``host_header``
    is what goes in ``Host:``; ``base_path`` has no trailing slash.
    ``address``, when set, is the IP address to connect to instead of
    resolving ``host`` (one address of a name spread over by an endpoint
    group); ``host`` still names the server in ``Host:`` and for TLS.
    """

    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    host_header: str
    address: str | None = None
    #: built once: it is looked up on every call
    key: tuple[str, str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.host if self.address is None else f"{self.host}@{self.address}"
        object.__setattr__(self, "key", (self.scheme, where, self.port))

    def with_address(self, address: str) -> Endpoint:
        """This endpoint, connecting to ``address`` (an IP) instead of resolving its host."""
        shown = f"[{address}]" if ":" in address else address
        url = f"{self.scheme}://{shown}:{self.port}{self.base_path}"
        return replace(self, url=url, address=address)

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse and check a base URL; ``InvalidRequest`` names what is wrong."""
        if not isinstance(url, str):
            raise InvalidRequest(f"endpoint URL must be a str, not {type(url).__name__}")
        if any(c <= " " or "\x7f" <= c <= "\x9f" for c in url):
            raise InvalidRequest(f"endpoint URL contains whitespace or control characters: {url!r}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidRequest(f"endpoint URL must start with http:// or https://: {url!r}")
        if not parts.hostname:
            raise InvalidRequest(f"endpoint URL has no host: {url!r}")
        if parts.username or parts.password:
            raise InvalidRequest(f"endpoint URL must not carry credentials: {url!r}")
        if parts.query or parts.fragment:
            raise InvalidRequest(f"endpoint URL must not have a query or fragment: {url!r}")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise InvalidRequest(f"endpoint URL has a bad port: {url!r}") from None
        host = _check_host(parts.hostname, url)
        base_path = parts.path.rstrip("/")
        if not PATH_TEXT.match(base_path):
            raise InvalidRequest(
                f"endpoint URL path must be plain ASCII path characters "
                f"(percent-encode anything else): {url!r}"
            )
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        return cls(
            url=url,
            scheme=scheme,
            host=host,
            port=port,
            base_path=base_path,
            host_header=host_header,
        )

    def __str__(self) -> str:
        return self.url

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


def _check_host(host: str, url: str) -> str:
    """``host`` as it goes into ``Host:``; InvalidRequest unless it is a plain
    ASCII name or an IP address.

    A non-ASCII (internationalised) name is refused, not converted: IDNA 2003
    (the standard library's codec) and IDNA 2008 map some names to different
    hosts, and the message gives the ASCII form to write instead.
    """
    if ":" in host:  # only an IPv6 literal has one (urlsplit took the port)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidRequest(f"endpoint URL has a bad IPv6 address: {url!r}") from None
        return host
    if host.isascii():
        if _HOST_NAME.match(host):
            return host
        raise InvalidRequest(
            f"endpoint URL host may hold only letters, digits, '-', '.' and '_': {url!r}"
        )
    try:
        hint = f" (its IDNA form: {host.encode('idna').decode('ascii')!r})"
    except UnicodeError:
        hint = ""
    raise InvalidRequest(
        f"endpoint URL host must be ASCII: write an internationalised name in its "
        f"IDNA (xn--) form{hint}: {url!r}"
    )


def check_header(name: str, value: str) -> tuple[bytes, bytes]:
    """Validate one header and encode it; ``InvalidRequest`` if it could
    smuggle a line break, a NUL or a bad name onto the wire."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidRequest(f"header names and values must be str, got {name!r}: {value!r}")
    try:
        bname = name.encode("ascii")
        bvalue = value.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidRequest(f"header {name!r} is not ASCII/latin-1 encodable") from None
    return _checked_bytes(bname, bvalue, name)


def _checked_bytes(bname: bytes, bvalue: bytes, shown: object) -> tuple[bytes, bytes]:
    """The grammar check of an encoded header; ``shown`` names it in the error."""
    if not _TOKEN.match(bname):
        raise InvalidRequest(f"invalid header name {shown!r}")
    if _BAD_VALUE.search(bvalue) or bvalue != bvalue.strip(b" \t"):
        raise InvalidRequest(
            f"invalid value for header {shown!r}: control characters or surrounding whitespace"
        )
    return bname, bvalue


def check_request_line(method: str, target: str) -> None:
    """``InvalidRequest`` unless ``method`` is a token and ``target`` visible
    ASCII: anything else would split or bend the request line on the wire."""
    if not _METHOD_TOKEN.match(method):
        raise InvalidRequest(f"invalid request method {method!r}: it must be a token")
    if not _TARGET.match(target):
        raise InvalidRequest(
            f"invalid request target {target!r}: ASCII without spaces or control characters"
        )


def check_header_pair(name: object, value: object) -> tuple[bytes, bytes]:
    """:func:`check_header` for a pair that may already be bytes (hooks append bytes)."""
    if isinstance(name, bytes | bytearray) and isinstance(value, bytes | bytearray):
        bname = bytes(name)
        return _checked_bytes(bname, bytes(value), bname)
    if isinstance(name, str) and isinstance(value, str):
        return check_header(name, value)
    raise InvalidRequest(
        f"a header must be a (name, value) pair of str or of bytes, not {name!r}: {value!r}"
    )


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only response headers.

    Repeated fields are joined with ``", "`` as RFC 9110 allows; ``get_all``
    returns them apart.
    """

    __slots__ = ("_dedup", "_items", "_joined", "_noted")

    def __init__(
        self,
        items: Iterable[tuple[str, str]] = (),
        dedup: str | None = None,
        noted: bool = False,
    ) -> None:
        """``noted``: the transport found ``dedup`` (the X-Rpc-Dedup field, or
        None) as it parsed the fields: :attr:`dedup` then needs no scan."""
        self._dedup = dedup
        self._noted = noted
        # the case-folded map is built on first use: most answers are read
        # for their body only, and this is on every call's path
        self._items = items if isinstance(items, list) else list(items)
        self._joined: dict[str, str] | None = None

    @property
    def _map(self) -> dict[str, str]:
        joined = self._joined
        if joined is None:
            joined = {}
            for key, value in self._items:
                low = key.lower()
                joined[low] = f"{joined[low]}, {value}" if low in joined else value
            self._joined = joined
        return joined

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    @property
    def dedup(self) -> str | None:
        """The ``X-Rpc-Dedup`` field (DEDUP_PROTOCOL.md), or None."""
        if self._noted:
            return self._dedup
        return self.first("x-rpc-dedup")

    def first(self, low: str) -> str | None:
        """The first field named ``low`` (given lower-case), or None.

        For the call path: a scan of the fields as they came, without
        building the case-folded map (an answer has a handful of fields).
        """
        joined = self._joined
        if joined is not None:
            return joined.get(low)
        n = len(low)
        for key, value in self._items:
            if len(key) == n and key.lower() == low:
                return value
        return None

    def get_all(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self._items if k.lower() == low]

    def raw_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _Record:
    """Equality and repr by fields, as a dataclass has them, for plain classes.

    ``Request`` and ``Response`` are made once per call: as dataclasses their
    generated ``__init__`` would stay interpreted in the compiled build.
    """

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())


class Request(_Record):
    """A prepared request, validated: transports write it as it is.

    ``target`` is the request target (path and query). ``fixed_headers``
    (the same for every call of a client) and ``headers`` (this call's) are
    already-checked ``(name, value)`` byte pairs, without Host,
    Content-Length or Transfer-Encoding, which the transport adds.
    ``name`` is what errors call the request (``service.method``).
    ``cache_key`` marks requests whose head prefix (request line, Host,
    fixed headers) may be cached: equal keys promise equal fixed headers.
    ``None`` for one-off requests. Equal when its fields are (:class:`_Record`).
    """

    _FIELDS = (
        "endpoint",
        "method",
        "target",
        "headers",
        "body",
        "name",
        "fixed_headers",
        "cache_key",
    )
    __slots__ = _FIELDS

    def __init__(  # noqa: PLR0917 - the signature the dataclass had
        self,
        endpoint: Endpoint,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: Body | None,
        name: str,
        fixed_headers: tuple[tuple[bytes, bytes], ...] = (),
        cache_key: object | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.name = name
        self.fixed_headers = fixed_headers
        self.cache_key = cache_key

    @property
    def url(self) -> str:
        e = self.endpoint
        return f"{e.scheme}://{e.host_header}{self.target}"


class Response(_Record):
    """A complete HTTP answer: status, reason, headers, the whole body.

    Equal when its fields are (:class:`_Record`).
    """

    _FIELDS = ("status", "reason", "headers", "body", "http_version")
    __slots__ = _FIELDS

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers,
        body: bytes | bytearray,
        http_version: str = "1.1",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.http_version = http_version
