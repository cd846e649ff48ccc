"""Password policy after NIST SP 800-63B-4: normalisation, a length cap, a blocklist, context.

Sans-I/O: this module decides, :mod:`bastion.passwords` hashes and loads the shipped blocklist.

What the default :class:`PasswordPolicy` enforces, and why:

* **Length**: at least 15 characters, or 8 when the account has a second factor (the
  guideline's two minimums); at most :data:`DEFAULT_MAX_LENGTH` (1024). Characters are Unicode
  code points, counted as typed: the smaller of the count before and after NFKC normalisation
  (:func:`typed_length`). NFKC can shrink text (``e`` plus a combining accent becomes ``é``)
  and can grow it (the ligature U+FDFA becomes 18 code points): one typed character counts as
  one either way, so a single ligature never passes a 15-character minimum.
* **No composition rules** ("one upper-case letter, one digit ..."). The guideline forbids
  them: they push people towards ``Password1!``. :class:`CompositionRules` exists as an opt-in
  for sites bound by an older standard, and is documented as against NIST advice.
* **Blocklist**: common and breached passwords (:class:`Blocklist`), matched through the usual
  decorations (:func:`blocklist_candidates`): case, common leetspeak (``P@ssw0rd``) and up to
  8 trailing digits and symbols (``Password1!``, ``Summer2024!``), the first variants an
  attacker tries. A passphrase of several words is not one list entry plus decoration, so it
  is unaffected.
* **Context words**: the user name, the e-mail address and the site's name, and their parts,
  also through leetspeak (``4l1c3`` contains ``alice``).
* **Repetition**: a password that is one short unit repeated (``aaaaaaaa``, ``abcabcabc``) or
  one run of consecutive characters (``123456789``, ``zyxwvut``).

:func:`normalize_password` is the single entry point for password text. It refuses anything over
the cap *before* normalising (a 1 MB password costs microseconds, never a hash), then applies
NFKC so that the same password typed on two keyboards (``é`` as one code point or as ``e`` plus
a combining accent) hashes identically.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import itertools
import re
import secrets
import string
import sys
import unicodedata
import zlib
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from bastion.core import _check
from bastion.errors import ConfigurationError, PasswordRejected

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MIN_LENGTH",
    "DEFAULT_MIN_LENGTH_WITH_SECOND_FACTOR",
    "Blocklist",
    "CompositionRules",
    "PasswordPolicy",
    "PasswordReason",
    "PasswordReasonCode",
    "PolicyResult",
    "blocklist_candidates",
    "blocklist_form",
    "breach_range_query",
    "context_words",
    "encode_blocklist",
    "generate_password",
    "normalize_password",
    "parse_breach_range",
    "typed_length",
]

DEFAULT_MIN_LENGTH: Final = 15
"""Shortest password for an account whose password is its only factor (800-63B-4)."""

DEFAULT_MIN_LENGTH_WITH_SECOND_FACTOR: Final = 8
"""Shortest password for an account that also has a second factor (800-63B-4)."""

DEFAULT_MAX_LENGTH: Final = 1024
"""Longest password accepted, in typed code points (see :func:`typed_length`). Bounds hashing
cost and input size: NFKC grows one code point into at most 18, so the hashed text stays under
18 times the cap."""

_RAW_SLACK: Final = 4
# NFKC can shrink text (combining sequences compose), so raw input up to 4x the cap is
# normalised before the cap is applied; anything longer is refused without normalising.

_BLOCKLIST_MAGIC: Final = b"BSTBLK01"
_BLOCKLIST_LABEL: Final = b"bastion.blocklist.v1\x00"
_DIGEST_BYTES: Final = 6  # 48-bit digests: see Blocklist
_WORD_SPLIT = re.compile(r"[\W_]+")
_MIN_CONTEXT_WORD: Final = 4
_DECORATION: Final = re.compile(r"[\W\d_]{1,8}\Z")
_TRAILING_SYMBOLS: Final = re.compile(r"[\W_]{1,8}\Z")
# Leetspeak read back as letters. "1" stands for "i" or "l", so both readings are tried.
_LEET_COMMON: Final = {
    "4": "a", "@": "a", "8": "b", "3": "e", "6": "g", "0": "o", "5": "s", "$": "s",
    "7": "t", "+": "t", "|": "l", "!": "i",
}  # fmt: skip
_LEET_READINGS: Final = (
    str.maketrans(_LEET_COMMON | {"1": "i"}),
    str.maketrans(_LEET_COMMON | {"1": "l"}),
)


class PasswordReasonCode(enum.StrEnum):
    """Why a password was refused. Stable values, for logs, metrics and translations."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_CHARACTERS = "invalid_characters"
    BLOCKLISTED = "blocklisted"
    BREACHED = "breached"
    CONTEXT_WORD = "context_word"
    REPETITIVE = "repetitive"
    NEEDS_LOWERCASE = "needs_lowercase"
    NEEDS_UPPERCASE = "needs_uppercase"
    NEEDS_DIGIT = "needs_digit"
    NEEDS_SYMBOL = "needs_symbol"


@dataclass(frozen=True, slots=True)
class PasswordReason:
    """One refusal: a stable ``code`` and a ``message`` fit to show the person choosing."""

    code: PasswordReasonCode
    message: str


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """The outcome of :meth:`PasswordPolicy.check`: acceptable when ``reasons`` is empty."""

    reasons: tuple[PasswordReason, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def codes(self) -> tuple[PasswordReasonCode, ...]:
        return tuple(reason.code for reason in self.reasons)

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(reason.message for reason in self.reasons)

    def __bool__(self) -> bool:
        return self.ok


def normalize_password(password: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """``password`` in NFKC form, or :class:`~bastion.errors.PasswordRejected`.

    Refuses a non-``str``, text with lone surrogates (it cannot be encoded, so it can never
    have been typed) and text over ``max_length`` characters as typed (:func:`typed_length`).
    Input longer than four times the cap is refused before normalisation, so the cost of
    hostile input is bounded by a ``len``.
    """
    if not isinstance(password, str):
        raise PasswordRejected(
            f"a password must be str, not {type(password).__name__}",
            reasons=(PasswordReasonCode.INVALID_CHARACTERS.value,),
        )
    if len(password) > max_length * _RAW_SLACK:
        raise _too_long(len(password), max_length)
    normalized = unicodedata.normalize("NFKC", password)
    length = typed_length(password, normalized)
    if length > max_length:
        raise _too_long(length, max_length)
    try:
        normalized.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordRejected(
            "the password contains a lone surrogate code point, which no keyboard produces",
            reasons=(PasswordReasonCode.INVALID_CHARACTERS.value,),
        ) from None
    return normalized


def typed_length(password: str, normalized: str) -> int:
    """The length of a password as its owner typed it: the smaller of its code points before
    and after NFKC (``normalized``).

    Counting only after NFKC lets one character stand for many (U+FDFA alone is 18 code points
    after NFKC); counting only before lets a decomposed spelling (``e`` plus a combining accent)
    count twice. The smaller count is never more than what was typed.
    """
    return min(len(password), len(normalized))


def _too_long(length: int, max_length: int) -> PasswordRejected:
    return PasswordRejected(
        f"the password is {length} characters long; the limit is {max_length} "
        "(raise max_length if longer passwords are legitimate)",
        reasons=(PasswordReasonCode.TOO_LONG.value,),
    )


def blocklist_form(password: str) -> str:
    """The form in which passwords are compared with the blocklist and with context words:
    NFKC, then case-folded, so ``PassWord`` and ``password`` are the same entry."""
    return unicodedata.normalize("NFKC", password).casefold()


def blocklist_candidates(password: str) -> frozenset[str]:
    """The forms of ``password`` looked up in a blocklist: its :func:`blocklist_form`, that
    form without up to 8 trailing digits and symbols (``password1!``, ``summer2024!``), and
    each of these read back from leetspeak (``p@ssw0rd`` as ``password``).

    These are the decorations people add to satisfy composition rules, and the first ones a
    guesser tries: a list entry with any of them is as weak as the entry itself. A handful of
    forms, so a check stays a few microseconds.
    """
    canonical = blocklist_form(password)
    stems = {
        canonical,
        _DECORATION.sub("", canonical),
        _TRAILING_SYMBOLS.sub("", canonical),
    }
    forms = set(stems)
    for stem in stems:
        for reading in _LEET_READINGS:
            plain = stem.translate(reading)
            forms.update((plain, _DECORATION.sub("", plain)))
    forms.discard("")
    return frozenset(forms)


def _blocklist_digest(password: str) -> int:
    raw = blocklist_form(password).encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(_BLOCKLIST_LABEL + raw).digest()
    return int.from_bytes(digest[:_DIGEST_BYTES], "big")


def encode_blocklist(passwords: Iterable[str]) -> bytes:
    """The compact file format :meth:`Blocklist.from_bytes` reads.

    Each entry is reduced to the first 48 bits of ``SHA-256(label + blocklist_form(entry))``;
    the sorted, de-duplicated digests are zlib-compressed behind an 8-byte magic and a 4-byte
    count. Empty entries are skipped.
    """
    digests = sorted({_blocklist_digest(entry) for entry in passwords if entry})
    body = b"".join(value.to_bytes(_DIGEST_BYTES, "big") for value in digests)
    header = _BLOCKLIST_MAGIC + len(digests).to_bytes(4, "big")
    return header + zlib.compress(body, 9)


class Blocklist:
    """A set of refused passwords, held as sorted 48-bit digests (6 bytes in the file, one
    64-bit integer in memory per entry) and searched by bisection in about a microsecond.

    Digests instead of text keep the shipped file small and the memory flat (400 000 entries
    take about 3 MB). The cost is a false-positive rate of ``len(self) / 2**48`` per check
    (about one in a billion for the shipped list): a random password is refused by mistake
    that rarely, and the person is asked to pick another.
    """

    __slots__ = ("_digests",)

    def __init__(self, passwords: Iterable[str] = ()) -> None:
        self._digests = _digests_from_encoded(encode_blocklist(passwords))

    @classmethod
    def from_bytes(cls, data: bytes) -> Blocklist:
        """Load the format written by :func:`encode_blocklist`. Raises ConfigurationError on
        a truncated or foreign file."""
        blocklist = cls.__new__(cls)
        blocklist._digests = _digests_from_encoded(data)
        return blocklist

    def __contains__(self, password: object) -> bool:
        """Whether ``password`` is an entry (compared in :func:`blocklist_form`). Exact: a
        decorated entry (``Password1!``) is found by :meth:`matches`."""
        if not isinstance(password, str) or not password:
            return False
        return self._has_digest(_blocklist_digest(password))

    def matches(self, password: str) -> bool:
        """Whether ``password`` is an entry or an entry in a usual decoration (see
        :func:`blocklist_candidates`). This is what :class:`PasswordPolicy` checks."""
        if not isinstance(password, str) or not password:
            return False
        return any(
            self._has_digest(_blocklist_digest(form)) for form in blocklist_candidates(password)
        )

    def _has_digest(self, target: int) -> bool:
        digests = self._digests
        index = bisect.bisect_left(digests, target)
        return index < len(digests) and digests[index] == target

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"Blocklist(entries={len(self._digests)})"


def _digests_from_encoded(data: bytes) -> array[int]:
    size = _DIGEST_BYTES
    if not isinstance(data, bytes) or len(data) < 12 or not data.startswith(_BLOCKLIST_MAGIC):
        raise ConfigurationError(
            "the blocklist data does not start with the bastion blocklist header; build it "
            "with bastion.core.passwords.encode_blocklist",
            setting="blocklist",
        )
    count = int.from_bytes(data[8:12], "big")
    try:
        body = zlib.decompress(data[12:])
    except zlib.error:
        body = b""
    if len(body) != count * size:
        raise ConfigurationError(
            f"the blocklist data is damaged: expected {count} entries of {size} bytes, "
            f"found {len(body)} bytes; rebuild it with encode_blocklist",
            setting="blocklist",
        )
    # Widen big-endian 6-byte digests into little-endian 8-byte words with strided copies
    # (C speed, no per-entry Python loop), then view them as unsigned 64-bit integers.
    wide = bytearray(count * 8)
    for byte in range(size):
        wide[byte::8] = body[size - 1 - byte :: size]
    digests = array("Q")
    digests.frombytes(bytes(wide))
    if sys.byteorder == "big":
        digests.byteswap()
    return digests


def context_words(*values: str | None) -> frozenset[str]:
    """The words a password must not contain, from a user name, an e-mail address, a site name.

    Each value contributes its whole :func:`blocklist_form` and each of its parts split at
    non-alphanumeric characters (``alice.smith@example.org`` gives ``alice``, ``smith``,
    ``example``), keeping only words of 4 or more characters: shorter ones occur in too many
    good passwords by chance.
    """
    words: set[str] = set()
    for value in values:
        if not value:
            continue
        canonical = blocklist_form(value)
        words.update(word for word in _WORD_SPLIT.split(canonical) if len(word) >= 4)
        if len(canonical) >= _MIN_CONTEXT_WORD:
            words.add(canonical)
    return frozenset(words)


def _is_repetitive(text: str) -> bool:
    length = len(text)
    if length < 3:
        return False
    for unit in range(1, min(4, length // 2) + 1):
        if (text[:unit] * (length // unit + 1))[:length] == text:
            return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return steps in ({1}, {-1})


@dataclass(frozen=True, slots=True, kw_only=True)
class CompositionRules:
    """Character-class rules ("a digit, an upper-case letter, a symbol").

    Danger: NIST SP 800-63B-4 says verifiers SHALL NOT impose composition rules; they make
    passwords more predictable, not stronger. Use only where an older standard demands them.
    """

    require_lowercase: bool = True
    require_uppercase: bool = True
    require_digit: bool = True
    require_symbol: bool = True

    def check(self, password: str) -> tuple[PasswordReason, ...]:
        reasons = []
        if self.require_lowercase and not any(c.islower() for c in password):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.NEEDS_LOWERCASE, "Include at least one lower-case letter."
                )
            )
        if self.require_uppercase and not any(c.isupper() for c in password):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.NEEDS_UPPERCASE, "Include at least one upper-case letter."
                )
            )
        if self.require_digit and not any(c.isdigit() for c in password):
            reasons.append(
                PasswordReason(PasswordReasonCode.NEEDS_DIGIT, "Include at least one digit.")
            )
        if self.require_symbol and all(c.isalnum() or c.isspace() for c in password):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.NEEDS_SYMBOL,
                    "Include at least one symbol or punctuation mark.",
                )
            )
        return tuple(reasons)


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordPolicy:
    """What makes a new password acceptable. See the module docstring for the defaults.

    ``blocklist`` is ``None`` for no blocklist; :func:`bastion.passwords.default_blocklist`
    loads the shipped one. ``site_words`` are refused in every password (the site's name and
    brand). ``composition`` is off by default (see :class:`CompositionRules`).
    """

    min_length: int = DEFAULT_MIN_LENGTH
    min_length_with_second_factor: int = DEFAULT_MIN_LENGTH_WITH_SECOND_FACTOR
    max_length: int = DEFAULT_MAX_LENGTH
    blocklist: Blocklist | None = None
    site_words: tuple[str, ...] = ()
    refuse_repetitive: bool = True
    composition: CompositionRules | None = None
    _site_context: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("min_length", "min_length_with_second_factor", "max_length"):
            _check.whole_number(name, getattr(self, name), low=1, unit="characters")
        if self.min_length_with_second_factor > self.min_length:
            raise ConfigurationError(
                "min_length_with_second_factor must not exceed min_length (a second factor "
                f"never requires a longer password); got {self.min_length_with_second_factor} "
                f"> {self.min_length}",
                setting="min_length_with_second_factor",
            )
        if self.min_length > self.max_length:
            raise ConfigurationError(
                f"min_length ({self.min_length}) must not exceed max_length ({self.max_length})",
                setting="min_length",
            )
        if self.blocklist is not None and not isinstance(self.blocklist, Blocklist):
            raise ConfigurationError(
                f"blocklist must be a Blocklist or None, not {type(self.blocklist).__name__}; "
                "load the shipped one with bastion.passwords.default_blocklist()",
                setting="blocklist",
            )
        if isinstance(self.site_words, str):
            raise ConfigurationError(
                "site_words must be a tuple of words, e.g. ('example', 'example.org'), "
                "not a single string",
                setting="site_words",
            )
        object.__setattr__(self, "_site_context", context_words(*self.site_words))

    def check(
        self,
        password: str,
        *,
        user_inputs: Iterable[str | None] = (),
        has_second_factor: bool = False,
    ) -> PolicyResult:
        """Every reason ``password`` is not acceptable (empty when it is).

        ``user_inputs`` are the account's own words: user name, e-mail address, display name.
        Never raises for any ``str``: over-long or unencodable input is a ``too_long`` or
        ``invalid_characters`` reason, decided before normalisation.
        """
        try:
            text = normalize_password(password, max_length=self.max_length)
        except PasswordRejected as error:
            code = PasswordReasonCode(error.reasons[0])
            if code is PasswordReasonCode.TOO_LONG:
                return PolicyResult(
                    (PasswordReason(code, f"Use at most {self.max_length} characters."),)
                )
            return PolicyResult(
                (PasswordReason(code, "The password contains characters that cannot be stored."),)
            )
        reasons: list[PasswordReason] = []
        minimum = self.min_length_with_second_factor if has_second_factor else self.min_length
        if typed_length(password, text) < minimum:
            reasons.append(
                PasswordReason(PasswordReasonCode.TOO_SHORT, f"Use at least {minimum} characters.")
            )
        if self.blocklist is not None and self.blocklist.matches(text):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.BLOCKLISTED,
                    "This password is too common: it is on a list of passwords that "
                    "attackers try first. Choose another.",
                )
            )
        canonical = blocklist_form(text)
        words = self._site_context | context_words(*user_inputs)
        readings = (canonical, *(canonical.translate(reading) for reading in _LEET_READINGS))
        if any(word in form for word in words for form in readings):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.CONTEXT_WORD,
                    "Don't use your user name, e-mail address or this site's name in your "
                    "password.",
                )
            )
        if self.refuse_repetitive and _is_repetitive(canonical):
            reasons.append(
                PasswordReason(
                    PasswordReasonCode.REPETITIVE,
                    "Avoid repeated or sequential characters such as 'aaaa' or '1234'.",
                )
            )
        if self.composition is not None:
            reasons.extend(self.composition.check(text))
        return PolicyResult(tuple(reasons))


_GENERATOR_ALPHABET: Final = string.ascii_letters + string.digits + "-_.!@#%+=?"


def generate_password(
    length: int = 20,
    *,
    alphabet: str = _GENERATOR_ALPHABET,
    composition: CompositionRules | None = None,
) -> str:
    """A random password from :mod:`secrets` (20 characters of a 72-symbol alphabet: 123 bits).

    With ``composition``, draws again until the rules are met (a handful of draws at most for
    the default alphabet); the rules cost entropy, see :class:`CompositionRules`.
    """
    _check.whole_number("length", length, low=8, high=1024)
    if len(set(alphabet)) < 10:
        raise ConfigurationError(
            "alphabet must hold at least 10 distinct characters", setting="alphabet"
        )
    for _ in range(1000):
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if composition is None or not composition.check(candidate):
            return candidate
    raise ConfigurationError(
        "the alphabet cannot satisfy the composition rules (for example no digits in it); "
        "widen the alphabet or relax the rules",
        setting="alphabet",
    )


def breach_range_query(password: str) -> tuple[str, str]:
    """The k-anonymity query for a password: the first 5 and the last 35 hex digits (upper
    case) of its SHA-1 over UTF-8 of the NFKC form. Only the 5-digit prefix leaves the process;
    the suffix is looked up in the answer (the Pwned Passwords range protocol).

    SHA-1 is what that protocol uses; it is a lookup key here, never a password hash.
    """
    digest = hashlib.sha1(
        normalize_password(password).encode("utf-8"), usedforsecurity=False
    ).hexdigest()
    upper = digest.upper()
    return upper[:5], upper[5:]


def parse_breach_range(body: str, suffix: str) -> int:
    """How often ``suffix`` occurs in a range answer (lines of ``SUFFIX:COUNT``); 0 if absent.

    Total: never raises. Malformed lines are skipped; padding entries (count 0) count as absent.
    """
    if not isinstance(body, str) or not isinstance(suffix, str):
        return 0
    wanted = suffix.strip().upper()
    for line in body.splitlines():
        head, sep, tail = line.partition(":")
        if sep and head.strip().upper() == wanted:
            count = tail.strip()
            return int(count) if count.isascii() and count.isdigit() and len(count) < 19 else 0
    return 0
