"""Go value semantics Sprig's list and dict functions rely on, over JSON-like values.

- :func:`is_empty`: Sprig's ``empty`` (zero number, false, nil, empty string/list/map).
- :func:`deep_equal`: Go's ``reflect.DeepEqual``: types must match (``1`` and ``1.0`` differ,
  as a Go ``int`` and ``float64`` do), NaN never equals itself, the same list or map object
  equals itself.
- :class:`EqualityKeys`: hashable stand-ins for values under ``deep_equal`` (``uniq``...).
- :func:`deep_copy`, :func:`merge`: copystructure's ``Copy`` and mergo's ``Merge`` /
  ``MergeWithOverwrite`` as Sprig calls them (merge works in place on ``dst``, like Go).

Every walk is bounded by a :class:`WalkBudget` (depth and number of visited values).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import MAX_STRING, WalkBudget
from bobravoz.runtime.template.values import go_kind, is_list, is_map


def is_empty(value: Any) -> bool:
    """Sprig's ``empty``: nil, false, 0, 0.0, "", [] and {} are empty; NaN is not."""
    if value is None or value is False:
        return True
    if value is True:
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str) or is_list(value) or is_map(value):
        return len(value) == 0
    return False


def _kind(value: Any) -> str:
    """The Go type a JSON-like value stands for (a tuple is a slice, a Mapping a map)."""
    return go_kind(value) or type(value).__name__


def deep_equal(left: Any, right: Any, budget: WalkBudget | None = None, depth: int = 0) -> bool:
    """Go's ``reflect.DeepEqual`` of two JSON-like values."""
    budget = budget or WalkBudget()
    budget.visit(depth)
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if kind == "slice":
        if left is right:
            return True
        return len(left) == len(right) and all(
            deep_equal(a, b, budget, depth + 1) for a, b in zip(left, right, strict=True)
        )
    if kind == "map":
        if left is right:
            return True
        if len(left) != len(right):
            return False
        return all(
            key in right and deep_equal(item, right[key], budget, depth + 1)
            for key, item in left.items()
        )
    return bool(left == right)


class _Unequal:
    """A key part that equals nothing else (NaN under DeepEqual)."""

    __slots__ = ()


class EqualityKeys:
    """Hashable keys such that two values have equal keys exactly when ``deep_equal`` says
    they are equal (up to the identity shortcut for the same list object holding a NaN)."""

    __slots__ = ("_budget",)

    def __init__(self) -> None:
        self._budget = WalkBudget()

    def key(self, value: Any, depth: int = 0) -> Any:
        """The key of ``value``; raises FunctionError past the walk budget."""
        self._budget.visit(depth)
        if value is None:
            return ("nil",)
        if isinstance(value, bool):
            return ("bool", value)
        if isinstance(value, int):
            return ("int", value)
        if isinstance(value, float):
            return ("float", value) if value == value else ("nan", _Unequal())
        if isinstance(value, str):
            return ("string", value)
        if is_list(value):
            return ("slice", tuple(self.key(item, depth + 1) for item in value))
        if is_map(value):
            return (
                "map",
                tuple(sorted((str(k), self.key(v, depth + 1)) for k, v in value.items())),
            )
        return ("other", id(value))


def deep_copy(value: Any, budget: WalkBudget | None = None, depth: int = 0) -> Any:
    """A copy sharing no list or map with ``value`` (copystructure ``Copy``)."""
    budget = budget or WalkBudget()
    budget.visit(depth)
    if is_list(value):
        return [deep_copy(item, budget, depth + 1) for item in value]
    if is_map(value):
        return {key: deep_copy(item, budget, depth + 1) for key, item in value.items()}
    return value


def merge(dst: MutableMapping[str, Any], src: Mapping[str, Any], *, overwrite: bool) -> None:
    """mergo ``Merge`` (or ``MergeWithOverwrite``) of ``src`` into ``dst``, in place.

    Without overwrite a key of ``src`` fills a key of ``dst`` that is missing or empty, maps
    merge recursively, and a nil in ``src`` is skipped. With overwrite every value of ``src``
    replaces that of ``dst`` (nil and empty values too), except that two maps merge
    recursively. Values are shared, not copied (as in Go).
    """
    _merge(dst, src, overwrite, WalkBudget(), 0)


def _merge(
    dst: MutableMapping[str, Any],
    src: Mapping[str, Any],
    overwrite: bool,
    budget: WalkBudget,
    depth: int,
) -> None:
    budget.visit(depth)
    for key, incoming in src.items():
        budget.visit(depth + 1)
        if incoming is None:
            if overwrite:
                dst[key] = None
            continue
        present = key in dst
        current = dst.get(key)
        if present and isinstance(current, Mapping) and isinstance(incoming, Mapping):
            if not isinstance(current, MutableMapping):
                current = dst[key] = dict(current)  # a read-only map is merged as a copy
            _merge(current, incoming, overwrite, budget, depth + 1)
            if current or incoming:
                continue
        if overwrite or not present or is_empty(current):
            dst[key] = incoming


def printed_size(value: Any, budget: WalkBudget | None = None, depth: int = 0) -> int:
    """An upper bound of the length of Go's ``%v`` of ``value``; raises FunctionError once
    it passes :data:`MAX_STRING` (checked before printing a value that could be huge)."""
    budget = budget or WalkBudget()
    budget.visit(depth)
    if isinstance(value, str):
        size = len(value)
    elif is_list(value):
        size = 2 + len(value)
        for item in value:
            size += printed_size(item, budget, depth + 1)
            _check(size)
    elif is_map(value):
        size = 5 + 2 * len(value)
        for key, item in value.items():
            size += len(str(key)) + printed_size(item, budget, depth + 1)
            _check(size)
    else:
        size = 32
    _check(size)
    return size


def _check(size: int) -> None:
    if size > MAX_STRING:
        raise FunctionError(f"value prints longer than {MAX_STRING} characters")
