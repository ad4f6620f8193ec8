"""Sprig's list and dict functions (see :mod:`.sprig`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import (
    go_kind_name,
    int_arg,
    list_kind_arg,
    map_arg,
    mutable_map_arg,
    string_arg,
)
from bobravoz.runtime.template.sprig_data import (
    EqualityKeys,
    deep_copy,
    deep_equal,
    is_empty,
    merge,
)
from bobravoz.runtime.template.sprig_numbers import (
    to_int64,
)
from bobravoz.runtime.template.sprig_registry import Registry, strval
from bobravoz.runtime.template.values import go_type, is_list, is_map

_REGISTRY = Registry()
_register = _REGISTRY.register
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = _REGISTRY.functions
"""This module's functions by template name."""


# --- lists ----------------------------------------------------------------------------------


@_register("list", "tuple")
def _list(*values: Any) -> list[Any]:
    """The arguments as a list."""
    return list(values)


@_register("first", "mustFirst")
def _first(values: Any) -> Any:
    """The first item, or nil for an empty list."""
    items = list_kind_arg(values, "Cannot find first on type {}")
    return items[0] if items else None


@_register("last", "mustLast")
def _last(values: Any) -> Any:
    """The last item, or nil for an empty list."""
    items = list_kind_arg(values, "Cannot find last on type {}")
    return items[-1] if items else None


@_register("rest", "mustRest")
def _rest(values: Any) -> list[Any]:
    """All items but the first."""
    return list_kind_arg(values, "Cannot find rest on type {}")[1:]


@_register("initial", "mustInitial")
def _initial(values: Any) -> list[Any]:
    """All items but the last."""
    return list_kind_arg(values, "Cannot find initial on type {}")[:-1]


@_register("append", "push", "mustAppend", "mustPush")
def _append(values: Any, item: Any) -> list[Any]:
    """A new list with ITEM added at the end."""
    return [*list_kind_arg(values, "Cannot push on type {}"), item]


@_register("prepend", "mustPrepend")
def _prepend(values: Any, item: Any) -> list[Any]:
    """A new list with ITEM added at the front."""
    return [item, *list_kind_arg(values, "Cannot prepend on type {}")]


@_register("concat")
def _concat(*lists: Any) -> list[Any]:
    """The lists joined into one."""
    joined: list[Any] = []
    for values in lists:
        joined.extend(list_kind_arg(values, "Cannot concat type {} as list"))
    return joined


@_register("reverse", "mustReverse")
def _reverse(values: Any) -> list[Any]:
    """A new list in reverse order."""
    return list_kind_arg(values, "Cannot find reverse on type {}")[::-1]


@_register("uniq", "mustUniq")
def _uniq(values: Any) -> list[Any]:
    """The items without duplicates (Go's DeepEqual), first occurrence kept."""
    items = list_kind_arg(values, "Cannot find uniq on type {}")
    keys = EqualityKeys()
    seen: set[Any] = set()
    unique = []
    for item in items:
        key = keys.key(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


@_register("without", "mustWithout")
def _without(values: Any, *omitted: Any) -> list[Any]:
    """``without LIST A B...``: the items not deeply equal to any of A, B..."""
    items = list_kind_arg(values, "Cannot find without on type {}")
    keys = EqualityKeys()
    dropped = {keys.key(value) for value in omitted}
    return [item for item in items if keys.key(item) not in dropped]


@_register("has", "mustHas")
def _has(needle: Any, haystack: Any) -> bool:
    """``has ITEM LIST``: whether LIST holds an item deeply equal to ITEM (nil: false)."""
    if haystack is None:
        return False
    items = list_kind_arg(haystack, "Cannot find has on type {}")
    return any(deep_equal(needle, item) for item in items)


@_register("compact", "mustCompact")
def _compact(values: Any) -> list[Any]:
    """The items that are not empty."""
    return [
        item for item in list_kind_arg(values, "Cannot compact on type {}") if not is_empty(item)
    ]


@_register("slice", "mustSlice")
def _slice(values: Any, *indices: Any) -> Any:
    """``slice LIST [START [END]]``: LIST[START:END]; nil for an empty list."""
    if not is_list(values):
        kind = "<nil>" if values is None else go_kind_name(values)
        raise FunctionError(f"list should be type of slice or array but {kind}")
    if not values:
        return None
    values = list(values)
    start = to_int64(indices[0]) if indices else 0
    end = to_int64(indices[1]) if len(indices) >= 2 else len(values)
    if not 0 <= start <= end <= len(values):
        raise FunctionError(f"reflect: slice index out of range [{start}:{end}]")
    return values[start:end]


@_register("chunk", "mustChunk")
def _chunk(size: Any, values: Any) -> list[list[Any]]:
    """``chunk SIZE LIST``: LIST cut into lists of SIZE items (the last may be shorter)."""
    length = int_arg(size)
    items = list_kind_arg(values, "Cannot chunk type {}")
    if length <= 0:
        raise FunctionError("runtime error: makeslice: len out of range")
    return [items[start : start + length] for start in range(0, len(items), length)]


# --- dicts ----------------------------------------------------------------------------------


@_register("dict")
def _dict(*pairs: Any) -> dict[str, Any]:
    """``dict K1 V1 K2 V2...``: keys printed as strings; a key without value gets ""."""
    result: dict[str, Any] = {}
    for index in range(0, len(pairs), 2):
        key = strval(pairs[index])
        result[key] = pairs[index + 1] if index + 1 < len(pairs) else ""
    return result


@_register("get")
def _get(mapping: Any, key: Any) -> Any:
    """``get DICT KEY``: the value, or "" when the key is absent."""
    items, name = map_arg(mapping), string_arg(key)
    if items is not None and name in items:
        return items[name]
    return ""


@_register("set")
def _set(mapping: Any, key: Any, value: Any) -> MutableMapping[str, Any]:
    """``set DICT KEY VALUE``: DICT itself, changed in place (as in Go)."""
    items, name = mutable_map_arg(mapping), string_arg(key)
    if items is None:
        raise FunctionError("assignment to entry in nil map")
    items[name] = value
    return items


@_register("unset")
def _unset(mapping: Any, key: Any) -> MutableMapping[str, Any]:
    """``unset DICT KEY``: DICT itself without KEY, changed in place (as in Go)."""
    items, name = mutable_map_arg(mapping), string_arg(key)
    if items is None:
        return {}
    items.pop(name, None)
    return items


@_register("hasKey")
def _has_key(mapping: Any, key: Any) -> bool:
    """``hasKey DICT KEY``."""
    items, name = map_arg(mapping), string_arg(key)
    return items is not None and name in items


@_register("pluck")
def _pluck(key: Any, *mappings: Any) -> list[Any]:
    """``pluck KEY DICT...``: the values of KEY in each dict that has it."""
    name = string_arg(key)
    found = []
    for mapping in mappings:
        items = map_arg(mapping)
        if items is not None and name in items:
            found.append(items[name])
    return found


@_register("keys")
def _keys(*mappings: Any) -> list[str]:
    """The keys of each dict (each dict's keys sorted; Go's order is random)."""
    names: list[str] = []
    for mapping in mappings:
        items = map_arg(mapping)
        if items:
            names.extend(sorted(items, key=str))
    return names


@_register("values")
def _values(mapping: Any) -> list[Any]:
    """The values, in sorted key order (Go's order is random)."""
    items = map_arg(mapping)
    return [items[key] for key in sorted(items, key=str)] if items else []


@_register("pick")
def _pick(mapping: Any, *names: Any) -> dict[str, Any]:
    """``pick DICT K...``: a new dict with only the keys K..."""
    items = map_arg(mapping) or {}
    wanted = [string_arg(name) for name in names]
    return {name: items[name] for name in wanted if name in items}


@_register("omit")
def _omit(mapping: Any, *names: Any) -> dict[str, Any]:
    """``omit DICT K...``: a new dict without the keys K..."""
    items = map_arg(mapping) or {}
    unwanted = {string_arg(name) for name in names}
    return {key: value for key, value in items.items() if key not in unwanted}


def _merged(target: Any, sources: tuple[Any, ...], overwrite: bool) -> MutableMapping[str, Any]:
    destination = mutable_map_arg(target)
    checked = [map_arg(source) for source in sources]
    if destination is None:
        destination = {}
    for source in checked:
        if source:
            merge(destination, source, overwrite=overwrite)
    return destination


@_register("merge", "mustMerge")
def _merge(target: Any, *sources: Any) -> MutableMapping[str, Any]:
    """``merge DST SRC...``: fill DST (in place) from each SRC; DST's values win."""
    return _merged(target, sources, overwrite=False)


@_register("mergeOverwrite", "mustMergeOverwrite")
def _merge_overwrite(target: Any, *sources: Any) -> MutableMapping[str, Any]:
    """``mergeOverwrite DST SRC...``: like ``merge`` but later values win."""
    return _merged(target, sources, overwrite=True)


@_register("dig")
def _dig(*args: Any) -> Any:
    """``dig K1 K2... DEFAULT DICT``: the value at the key path, or DEFAULT."""
    if len(args) < 3:
        raise FunctionError("dig needs at least three arguments")
    names = [string_arg(name) for name in args[:-2]]
    fallback, current = args[-2], args[-1]
    for name in names:
        if not is_map(current):
            raise FunctionError(
                f"interface conversion: interface {{}} is {go_type(current)}, "
                "not map[string]interface {}"
            )
        if name not in current:
            return fallback
        current = current[name]
    return current


@_register("deepCopy", "mustDeepCopy")
def _deep_copy(value: Any) -> Any:
    """A copy sharing no list or dict with VALUE."""
    return deep_copy(value)
