"""The msgpack codec shared by the client and the bundled server.

Wire rules (protocol v1): pack with ``use_bin_type=True`` (``bytes`` travel as
bin, ``str`` as str); unpack with ``raw=False`` and ``strict_map_key=False`` so
integer (and other non-str) map keys round-trip. Tuples come back as lists:
msgpack has one array type.

Unpacking is bounded: every length limit is explicit, and the caller bounds
the buffer itself (the transports never hand over more than
``max_response_size`` bytes). msgpack's own C unpacker bounds nesting depth.

Decoded memory is bounded too, not only bytes: a map or array costs one
byte on the wire and 64-190 bytes of Python objects (an array of empty maps
made ~74 bytes of memory per body byte: 5 GB at the 64 MiB default). So a
body above :data:`GUARD_ABOVE` bytes may decode to containers worth at most
one body byte per :data:`MAP_COST` of maps and :data:`ARRAY_COST` of arrays
(about 24 bytes of container objects per body byte; ``DecodeError`` past
that). The check is cheap where it cannot trip: one ``bytes.translate``
counts the bytes that could start a map or an array (0x80-0x9f, 0xdc-0xdf;
0.3-0.6 ms per MiB) and when even all of them could not exceed the budget
the body is decoded as before; only a denser body is decoded with counting
hooks (``object_hook``/``list_hook``). Bodies up to ``GUARD_ABOVE`` (the
hot path: at most ~4.7 MB of objects) are not looked at.

A :class:`Codec` is an immutable value; build another with
:func:`dataclasses.replace` to talk to an older server (``raw=True`` for
servers that pack text as raw bytes, ``use_bin_type=False`` for servers that
predate the bin type) or to add ext-type hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
from mypy_extensions import mypyc_attr

from ..exceptions import DecodeError, InvalidRequest
from .models import reduce_by_init_fields

__all__ = ["Codec", "DEFAULT_CODEC"]

MIB = 1024 * 1024
#: bodies above this size get their decoded containers bounded (module docstring)
GUARD_ABOVE: Final = 64 * 1024
#: body bytes a decoded map costs against the budget (a dict is 64-190 bytes)
MAP_COST: Final = 8
#: and an array (a list is 56-72 bytes with its slot)
ARRAY_COST: Final = 3
#: the bytes that may start a map or an array are kept, every other one deleted
_NOT_CONTAINERS: Final = bytes(
    b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF)
)


class _TooManyContainers(ValueError):
    """The decoded maps and arrays would cost more than the body's size allows."""


class _Budget:
    """Counting hooks: raise once the containers cost more than ``left`` body bytes."""

    def __init__(self, left: int) -> None:
        self.left = left

    def map(self, obj: Any) -> Any:
        self.left -= MAP_COST
        if self.left < 0:
            raise _TooManyContainers()
        return obj

    def array(self, obj: Any) -> Any:
        self.left -= ARRAY_COST
        if self.left < 0:
            raise _TooManyContainers()
        return obj


@mypyc_attr(allow_interpreted_subclasses=True)  # users subclass it
@dataclass(frozen=True)
class Codec:
    """How call arguments are packed and results unpacked.

    ``pack`` raises :class:`InvalidRequest` for a value msgpack cannot
    encode; ``unpack`` raises :class:`DecodeError` for bytes that are not one
    complete msgpack value within the limits. Neither ever raises a msgpack
    exception.

    The fields are msgpack's options of the same names: ``use_bin_type``,
    ``datetime`` and ``default`` (called for an object msgpack cannot pack)
    for packing; ``raw``, ``strict_map_key``, ``ext_hook`` (``ext_hook(code,
    data)``), ``timestamp`` (0: ext -1 decodes as ``msgpack.Timestamp``, 3:
    as datetime) and the length limits ``max_str_len``, ``max_bin_len``,
    ``max_array_len``, ``max_map_len``, ``max_ext_len`` (one answer's
    strings, binaries, arrays, maps, ext values; above one: DecodeError)
    for unpacking. ``content_type`` is sent as ``Content-Type``.
    """

    use_bin_type: bool = True
    raw: bool = False
    strict_map_key: bool = False
    #: called for objects msgpack cannot pack (like msgpack's ``default``)
    default: Callable[[Any], Any] | None = None
    #: called as ``ext_hook(code, data)`` for ext types (msgpack's ``ext_hook``)
    ext_hook: Callable[[int, bytes], Any] | None = None
    #: 0: timestamps (ext -1) decode as ``msgpack.Timestamp``; 3: as datetime
    timestamp: int = 0
    datetime: bool = False
    max_str_len: int = 64 * MIB
    max_bin_len: int = 64 * MIB
    max_array_len: int = 16 * MIB
    max_map_len: int = 8 * MIB
    max_ext_len: int = 1 * MIB
    content_type: str = "application/x-msgpack"
    _unpack_kw: dict[str, Any] = field(init=False, repr=False, compare=False)
    _pack_kw: dict[str, Any] = field(init=False, repr=False, compare=False)
    _packer: Callable[[Any], bytes] | None = field(init=False, repr=False, compare=False)
    #: ``unpackb`` with only the options that differ from msgpack's defaults,
    #: for bodies up to ``_short_limit`` bytes (see __post_init__)
    _short_unpack: Callable[[Any], Any] = field(init=False, repr=False, compare=False)
    _short_limit: int = field(init=False, repr=False, compare=False)
    #: the largest body decoded without a look (min of the two limits above)
    _fast_limit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unpack_kw: dict[str, Any] = {
            "raw": self.raw,
            "strict_map_key": self.strict_map_key,
            "timestamp": self.timestamp,
            "max_str_len": self.max_str_len,
            "max_bin_len": self.max_bin_len,
            "max_array_len": self.max_array_len,
            "max_map_len": self.max_map_len,
            "max_ext_len": self.max_ext_len,
        }
        if self.ext_hook is not None:
            unpack_kw["ext_hook"] = self.ext_hook
        pack_kw: dict[str, Any] = {"use_bin_type": self.use_bin_type, "datetime": self.datetime}
        if self.default is not None:
            pack_kw["default"] = self.default
        object.__setattr__(self, "_unpack_kw", unpack_kw)
        # unpackb bounds every length by the body's own size when no limit is
        # given (a map by half of it), so for a body no longer than the
        # smallest limit the limits change nothing, and passing eight keyword
        # arguments costs three times the decoding of a small answer
        short_kw = {
            k: v
            for k, v in unpack_kw.items()
            if not k.startswith("max_")
            and (k not in _UNPACKB_DEFAULTS or _UNPACKB_DEFAULTS[k] != v)
        }
        object.__setattr__(self, "_short_unpack", functools.partial(msgpack.unpackb, **short_kw))
        limit = min(
            self.max_str_len,
            self.max_bin_len,
            self.max_array_len,
            2 * self.max_map_len,
            self.max_ext_len,
        )
        object.__setattr__(self, "_short_limit", limit)
        object.__setattr__(self, "_fast_limit", min(limit, GUARD_ABOVE))
        object.__setattr__(self, "_pack_kw", pack_kw)
        # One reusable Packer is ~3x cheaper than packb per call. It is safe to
        # share: packing runs in C without a switch, unless a ``default``
        # hook runs Python mid-pack; then every call gets its own packer.
        packer = None if self.default is not None else msgpack.Packer(**pack_kw).pack
        object.__setattr__(self, "_packer", packer)

    def pack(self, obj: Any, *, name: str | None = None) -> bytes:
        """Encode ``obj``; :class:`InvalidRequest` (naming ``name``) if it cannot be."""
        try:
            if self._packer is not None:
                return self._packer(obj)
            return msgpack.packb(obj, **self._pack_kw)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidRequest(
                f"arguments cannot be encoded as msgpack: {exc}", name=name
            ) from None

    def unpack(self, data: bytes | bytearray | memoryview, *, name: str | None = None) -> Any:
        """Decode ``data`` as exactly one msgpack value; :class:`DecodeError`
        (naming ``name``) otherwise."""
        try:
            if len(data) <= self._fast_limit:
                return self._short_unpack(data)
            return self._guarded_unpack(data)
        except _TooManyContainers:
            raise DecodeError(
                f"response body of {len(data)} bytes decodes to more maps and arrays than its "
                f"size allows (at most one per {MAP_COST} bytes of maps, {ARRAY_COST} of arrays)",
                name=name,
            ) from None
        except Exception as exc:  # noqa: BLE001 - msgpack raises ValueError, TypeError, ...
            raise DecodeError(
                f"response body is not valid msgpack ({type(exc).__name__}: {exc})", name=name
            ) from None

    def _guarded_unpack(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode a body above the fast limit, its containers bounded (module docstring)."""
        size = len(data)
        unpack: Callable[..., Any] = (
            self._short_unpack if size <= self._short_limit else self._long_unpack
        )
        if size <= GUARD_ABOVE:
            return unpack(data)
        view = data if isinstance(data, bytes | bytearray) else bytes(data)
        possible = len(view.translate(None, _NOT_CONTAINERS))
        if possible * MAP_COST <= size:  # even if every one were a map
            return unpack(data)
        budget = _Budget(size)
        return unpack(data, object_hook=budget.map, list_hook=budget.array)

    def _long_unpack(self, data: Any, **hooks: Any) -> Any:
        return msgpack.unpackb(data, **self._unpack_kw, **hooks)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


#: msgpack.unpackb's defaults for the options Codec passes besides the limits
_UNPACKB_DEFAULTS: dict[str, Any] = {"raw": False, "strict_map_key": True, "timestamp": 0}

DEFAULT_CODEC = Codec()
