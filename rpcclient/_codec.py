"""The msgpack codec shared by the client and the bundled server.

Wire rules (protocol v1): pack with ``use_bin_type=True`` (``bytes`` travel as
bin, ``str`` as str); unpack with ``raw=False`` and ``strict_map_key=False`` so
integer (and other non-str) map keys round-trip. Tuples come back as lists:
msgpack has one array type.

Unpacking is bounded: every length limit is explicit, and the caller bounds
the buffer itself (the transports never hand over more than
``max_response_size`` bytes). msgpack's own C unpacker bounds nesting depth.

A :class:`Codec` is an immutable value; build another with
:func:`dataclasses.replace` to talk to an older server (``raw=True`` for
servers that pack text as raw bytes, ``use_bin_type=False`` for servers that
predate the bin type) or to add ext-type hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from mypy_extensions import mypyc_attr

from ._models import reduce_by_init_fields
from .exceptions import DecodeError, InvalidRequest

__all__ = ["Codec", "DEFAULT_CODEC"]

MIB = 1024 * 1024


@mypyc_attr(allow_interpreted_subclasses=True)  # users subclass it
@dataclass(frozen=True)
class Codec:
    """How call arguments are packed and results unpacked.

    ``pack`` raises :class:`InvalidRequest` for a value msgpack cannot
    encode; ``unpack`` raises :class:`DecodeError` for bytes that are not one
    complete msgpack value within the limits. Neither ever raises a msgpack
    exception.
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
        """Decode exactly one msgpack value; :class:`DecodeError` otherwise."""
        try:
            if len(data) <= self._short_limit:
                return self._short_unpack(data)
            return msgpack.unpackb(data, **self._unpack_kw)
        except Exception as exc:  # noqa: BLE001 - msgpack raises ValueError, TypeError, ...
            raise DecodeError(
                f"response body is not valid msgpack ({type(exc).__name__}: {exc})", name=name
            ) from None

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


#: msgpack.unpackb's defaults for the options Codec passes besides the limits
_UNPACKB_DEFAULTS: dict[str, Any] = {"raw": False, "strict_map_key": True, "timestamp": 0}

DEFAULT_CODEC = Codec()
