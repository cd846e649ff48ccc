"""A policy from a file: the format follows the suffix, every error names the file and line.

Read once at start-up (``AuthzPolicy(policy=Path("policy.yaml"))``). The text must be UTF-8 (a
leading byte-order mark is dropped); the parsing and validation are
:func:`bastion.core.authz.loader.load_policy`'s, with the file's path as the source, so a
message reads ``policy.yaml line 12: unknown key 'efect' in rules[0] ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from bastion.core.authz.loader import Format, PolicyError, load_policy
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    import os

    from bastion.core.authz.policy import Policy

__all__ = ["MAX_POLICY_BYTES", "SUFFIXES", "policy_from_file"]

SUFFIXES: Final[dict[str, Format]] = {
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
}

MAX_POLICY_BYTES: Final = 16 * 1024 * 1024
"""A policy file larger than this is refused (10,000 ABAC rules fit in a few megabytes)."""


def policy_from_file(path: str | os.PathLike[str], *, format: Format | None = None) -> Policy:  # noqa: A002 (the loader's name for it)
    """The policy in ``path``; ``format`` defaults to the one its suffix names.

    Raises :class:`~bastion.core.authz.loader.PolicyError` for a malformed document and
    :class:`~bastion.errors.ConfigurationError` for a file that cannot be read or has no known
    suffix.
    """
    file = Path(path)
    source = str(file)
    if format is None:
        suffix = file.suffix.lower()
        if suffix not in SUFFIXES:
            raise ConfigurationError(
                f"policy file {source}: the suffix {suffix or '(none)'!r} names no policy "
                f"format (expected one of {', '.join(SUFFIXES)}, or pass format=)",
                setting="policy",
            )
        format = SUFFIXES[suffix]  # noqa: A001
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(
            f"policy file {source} cannot be read: {reason}", setting="policy"
        ) from None
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigurationError(
            f"policy file {source} is larger than {MAX_POLICY_BYTES} bytes", setting="policy"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            f"the file is not UTF-8 (byte {exc.start} cannot be decoded)", source=source, line=line
        ) from None
    return load_policy(text.removeprefix("\ufeff"), format=format, source=source)
