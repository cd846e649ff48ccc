"""How Flask's session values become JSON: tuples are stored as lists.

Flask's own code writes tuples into the session (``flash()`` appends ``(category, message)``
pairs to ``session["_flashes"]``), and its cookie serializer would give them back as tuples.
bastion's records are plain JSON, where the nearest value is a list, and its session refuses a
tuple at assignment because it would not come back unchanged. Under Flask the tuple is converted
to a list when it is assigned instead, so ``session[key]`` reads the same list in this request
and in every later one, and Flask's readers keep working (``get_flashed_messages`` unpacks
2-sequences; a template's ``{% for category, message in ... %}`` does too). Every other non-JSON
value (``datetime``, ``UUID``, ``bytes``, ``set`` ...) is still refused with a
:class:`~bastion.errors.SessionDataError` naming the key.
"""

from __future__ import annotations

from typing import Final

_DEPTH: Final = 40
"""Beyond the core's nesting limit, so a deeper (or cyclic) value is left for
:func:`~bastion.core.sessions.check_session_value` to refuse by name."""


def tuples_as_lists(value: object, depth: int = 0) -> object:
    """``value`` with every tuple inside it (at any depth) replaced by a list.

    The containers are copied only where a tuple was replaced, so a value without tuples is
    returned as the same object (``session.setdefault("cart", []).append(x)`` keeps its
    reference).
    """
    if depth > _DEPTH:
        return value
    if isinstance(value, tuple):
        return [tuples_as_lists(item, depth + 1) for item in value]
    if isinstance(value, list):
        items = [tuples_as_lists(item, depth + 1) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value
    if isinstance(value, dict):
        entries = {key: tuples_as_lists(item, depth + 1) for key, item in value.items()}
        changed = any(entries[key] is not item for key, item in value.items())
        return entries if changed else value
    return value
