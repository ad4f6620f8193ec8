"""Sprig's JSON, base64/base32, hash and type functions (see :mod:`.sprig`)."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import (
    from_utf8,
    go_kind_name,
    string_arg,
    utf8,
)
from bobravoz.runtime.template.sprig_data import (
    deep_equal,
)
from bobravoz.runtime.template.sprig_encoding import b32decode, b64decode
from bobravoz.runtime.template.sprig_json import UnsupportedValue
from bobravoz.runtime.template.sprig_json import decode as json_decode
from bobravoz.runtime.template.sprig_json import encode as json_encode
from bobravoz.runtime.template.sprig_registry import Registry
from bobravoz.runtime.template.values import go_type

_REGISTRY = Registry()
_register = _REGISTRY.register
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = _REGISTRY.functions
"""This module's functions by template name."""


# --- encodings and hashes -------------------------------------------------------------------


def _json(value: Any, *, lenient: bool, escape_html: bool = True, indent: str | None = None) -> str:
    """Go's JSON of VALUE; what Go's encoder refuses is "" (``lenient``) or an error."""
    try:
        return json_encode(value, escape_html=escape_html, indent=indent)
    except UnsupportedValue as exc:
        if lenient:
            return ""
        raise FunctionError(str(exc)) from None


@_register("toJson")
def _to_json(value: Any) -> str:
    """Go's ``json.Marshal``; "" when VALUE cannot be encoded (NaN, ±Inf)."""
    return _json(value, lenient=True)


@_register("toPrettyJson")
def _to_pretty_json(value: Any) -> str:
    """Go's ``json.MarshalIndent`` with two spaces; "" when VALUE cannot be encoded."""
    return _json(value, lenient=True, indent="  ")


@_register("mustToJson")
def _must_to_json(value: Any) -> str:
    """Go's ``json.Marshal``; an error when VALUE cannot be encoded."""
    return _json(value, lenient=False)


@_register("mustToPrettyJson")
def _must_to_pretty_json(value: Any) -> str:
    """Go's ``json.MarshalIndent``; an error when VALUE cannot be encoded."""
    return _json(value, lenient=False, indent="  ")


@_register("toRawJson", "mustToRawJson")
def _to_raw_json(value: Any) -> str:
    """JSON without escaping ``<``, ``>``, ``&``; an error when VALUE cannot be encoded
    (Sprig's ``toRawJson`` panics there)."""
    return _json(value, lenient=False, escape_html=False)


@_register("fromJson")
def _from_json(text: Any) -> Any:
    """The value of a JSON text (numbers are floats); nil for invalid JSON."""
    try:
        return json_decode(string_arg(text))
    except FunctionError:
        if not isinstance(text, str):
            raise
        return None


@_register("mustFromJson")
def _must_from_json(text: Any) -> Any:
    """The value of a JSON text; an error for invalid JSON."""
    return json_decode(string_arg(text))


@_register("b64enc")
def _b64enc(text: Any) -> str:
    """Standard base64 of the UTF-8 bytes."""
    return base64.b64encode(utf8(string_arg(text))).decode("ascii")


@_register("b64dec")
def _b64dec(text: Any) -> str:
    """Decoded standard base64; Go's error text when the input is invalid."""
    decoded, error = b64decode(utf8(string_arg(text)))
    if error is not None:
        return f"illegal base64 data at input byte {error}"
    return from_utf8(decoded)


@_register("b32enc")
def _b32enc(text: Any) -> str:
    """Standard base32 of the UTF-8 bytes."""
    return base64.b32encode(utf8(string_arg(text))).decode("ascii")


@_register("b32dec")
def _b32dec(text: Any) -> str:
    """Decoded standard base32; Go's error text when the input is invalid."""
    decoded, error = b32decode(utf8(string_arg(text)))
    if error is not None:
        return f"illegal base32 data at input byte {error}"
    return from_utf8(decoded)


@_register("sha1sum")
def _sha1sum(text: Any) -> str:
    """Hex SHA-1 of the UTF-8 bytes."""
    return hashlib.sha1(utf8(string_arg(text)), usedforsecurity=False).hexdigest()


@_register("sha256sum")
def _sha256sum(text: Any) -> str:
    """Hex SHA-256 of the UTF-8 bytes."""
    return hashlib.sha256(utf8(string_arg(text))).hexdigest()


@_register("sha512sum")
def _sha512sum(text: Any) -> str:
    """Hex SHA-512 of the UTF-8 bytes."""
    return hashlib.sha512(utf8(string_arg(text))).hexdigest()


@_register("adler32sum")
def _adler32sum(text: Any) -> str:
    """Adler-32 checksum of the UTF-8 bytes, in decimal."""
    return str(zlib.adler32(utf8(string_arg(text))))


@_register("uuidv4")
def _uuidv4() -> str:
    """A random UUID (version 4)."""
    return str(uuid.uuid4())


# --- types ----------------------------------------------------------------------------------


@_register("typeOf")
def _type_of(value: Any) -> str:
    """Go's ``%T`` of the value (``string``, ``float64``, ``[]interface {}``...)."""
    return go_type(value)


@_register("typeIs")
def _type_is(name: Any, value: Any) -> bool:
    """``typeIs NAME VALUE``."""
    return string_arg(name) == go_type(value)


@_register("typeIsLike")
def _type_is_like(name: Any, value: Any) -> bool:
    """``typeIsLike NAME VALUE`` (a pointer to NAME counts; there are none here)."""
    target, actual = string_arg(name), go_type(value)
    return target in (actual, "*" + actual)


@_register("kindOf")
def _kind_of(value: Any) -> str:
    """Go's reflect kind (``string``, ``float64``, ``int``, ``bool``, ``slice``, ``map``,
    ``invalid`` for nil)."""
    return go_kind_name(value)


@_register("kindIs")
def _kind_is(name: Any, value: Any) -> bool:
    """``kindIs NAME VALUE``."""
    return string_arg(name) == go_kind_name(value)


@_register("deepEqual")
def _deep_equal(left: Any, right: Any) -> bool:
    """Go's ``reflect.DeepEqual`` (``1`` and ``1.0`` differ: int and float64)."""
    return deep_equal(left, right)
