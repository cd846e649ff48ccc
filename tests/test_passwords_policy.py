"""The password policy (NIST SP 800-63B-4), normalisation, the shipped blocklist, breach hook."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.passwords import (
    DEFAULT_MAX_LENGTH,
    Blocklist,
    CompositionRules,
    PasswordPolicy,
    PasswordReasonCode,
    blocklist_form,
    breach_range_query,
    context_words,
    encode_blocklist,
    generate_password,
    normalize_password,
    parse_breach_range,
)
from bastion.errors import ConfigurationError, PasswordRejected
from bastion.passwords import (
    BreachChecker,
    OfflineRangeSource,
    check_new_password,
    default_blocklist,
    default_policy,
)

GOOD = "tangerine-ocelot-violin-harbour"


@pytest.fixture(scope="module")
def shipped() -> Blocklist:
    return default_blocklist()


@pytest.fixture(scope="module")
def policy(shipped: Blocklist) -> PasswordPolicy:
    return PasswordPolicy(blocklist=shipped, site_words=("Bastion Demo",))


# --- normalisation and the length cap ---------------------------------------------------------


def test_nfkc_makes_two_spellings_one_password() -> None:
    composed = "caf\u00e9-au-lait-sans-sucre"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert normalize_password(composed) == normalize_password(decomposed)
    assert normalize_password("\uff21\uff22\uff23") == "ABC"  # full-width letters


def test_one_megabyte_password_is_refused_fast() -> None:
    huge = "a" * 1_000_000
    started = time.perf_counter()
    with pytest.raises(PasswordRejected) as caught:
        normalize_password(huge)
    assert time.perf_counter() - started < 0.05
    assert caught.value.reasons == ("too_long",)
    assert "1000000" in str(caught.value)
    assert "a" * 20 not in str(caught.value)


def test_length_is_counted_after_normalisation() -> None:
    # 1024 composed characters given as 2048 code points (NFD) still fit the cap.
    decomposed = unicodedata.normalize("NFD", "\u00e9" * DEFAULT_MAX_LENGTH)
    assert len(decomposed) == 2 * DEFAULT_MAX_LENGTH
    assert len(normalize_password(decomposed)) == DEFAULT_MAX_LENGTH
    with pytest.raises(PasswordRejected):
        normalize_password("x" * (DEFAULT_MAX_LENGTH + 1))


def test_non_text_and_lone_surrogates_are_refused() -> None:
    with pytest.raises(PasswordRejected) as caught:
        normalize_password(b"bytes" * 4)  # type: ignore[arg-type]
    assert caught.value.reasons == ("invalid_characters",)
    with pytest.raises(PasswordRejected) as caught:
        normalize_password("abc\ud800def-long-enough")
    assert caught.value.reasons == ("invalid_characters",)


def test_length_counts_what_was_typed_not_what_nfkc_expands_to(policy: PasswordPolicy) -> None:
    # NFKC turns some single characters into many: U+FDFA (an Arabic ligature) becomes 18
    # code points, U+FDFB 8. One typed character is one character, for the minimum ...
    for char, expanded in (("\ufdfa", 18), ("\ufdfb", 8), ("\u3392", 3)):
        assert len(unicodedata.normalize("NFKC", char)) == expanded
    assert PasswordReasonCode.TOO_SHORT in policy.check("\ufdfa").codes
    assert PasswordReasonCode.TOO_SHORT in policy.check("\ufdfb", has_second_factor=True).codes
    assert PasswordReasonCode.TOO_SHORT in policy.check("\ufdfa" * 14).codes
    assert PasswordReasonCode.TOO_SHORT in policy.check("\ufdfb" * 7, has_second_factor=True).codes
    assert PasswordReasonCode.TOO_SHORT not in policy.check("\ufdfa" * 15).codes
    # ... and for the maximum: 1024 typed characters fit the cap however far they expand.
    typed = "\ufdfa" * DEFAULT_MAX_LENGTH
    assert len(normalize_password(typed)) == 18 * DEFAULT_MAX_LENGTH
    assert PasswordReasonCode.TOO_LONG not in policy.check(typed).codes
    with pytest.raises(PasswordRejected):
        normalize_password("\ufdfa" * (DEFAULT_MAX_LENGTH + 1))


# --- the policy -------------------------------------------------------------------------------


def test_a_long_uncommon_passphrase_passes(policy: PasswordPolicy) -> None:
    result = policy.check(GOOD, user_inputs=("alice", "alice@example.org"))
    assert result.ok, result.messages
    assert result.reasons == ()


def test_minimum_is_15_or_8_with_a_second_factor(policy: PasswordPolicy) -> None:
    short = "qz7-Vb2!wk"  # 10 characters, not on any list
    assert policy.check(short).codes == (PasswordReasonCode.TOO_SHORT,)
    assert policy.check(short).messages == ("Use at least 15 characters.",)
    assert policy.check(short, has_second_factor=True).ok


def test_no_composition_rules_by_default(policy: PasswordPolicy) -> None:
    assert policy.check("all lower case words here").ok


def test_blocklisted_passwords_are_refused_case_blind(policy: PasswordPolicy) -> None:
    for password in ("password", "PassWord", "qwertyuiop", "iloveyou"):
        result = policy.check(password, has_second_factor=True)
        assert PasswordReasonCode.BLOCKLISTED in result.codes, password


@pytest.mark.parametrize(
    "password",
    [
        "Password1!",
        "P@ssw0rd!",
        "Welcome1!",
        "Summer2024!",
        "p4ssw0rd2024",
        "PASSWORD123!!",
        "Welcom3!",
        "L3tm31n!",
        "Dr@g0n_1999",
        "iloveyou2!",
        "$unsh1ne#1",
    ],
)
def test_decorated_common_passwords_are_refused(policy: PasswordPolicy, password: str) -> None:
    # The commonest passwords with the usual decorations (case, leetspeak, a digit, a year, a
    # symbol at the end) are the first an attacker tries; they stay refused at the 8-character
    # minimum of an account with a second factor.
    assert len(password) >= 8
    result = policy.check(password, has_second_factor=True)
    assert PasswordReasonCode.BLOCKLISTED in result.codes, password


@pytest.mark.parametrize(
    "password",
    [
        GOOD,
        "correct horse battery staple",
        "Granite kettle 1987 sings!",
        "my dog eats pine cones at dawn",
        "vQ7#pL2m!xR9",
        "Fjord-Mint-7",
        "kwz8 ploo 3vvr",
        "Tangerine Ocelot 2024!",
    ],
)
def test_ordinary_strong_passwords_are_not_refused(policy: PasswordPolicy, password: str) -> None:
    result = policy.check(password, has_second_factor=True)
    assert result.ok, (password, result.codes)


def test_context_words_are_refused_through_leetspeak(policy: PasswordPolicy) -> None:
    result = policy.check("4l1c3-keeps-the-keys", user_inputs=("alice",))
    assert PasswordReasonCode.CONTEXT_WORD in result.codes


def test_shipped_blocklist_is_large_and_fast(shipped: Blocklist) -> None:
    assert len(shipped) >= 20_000
    assert "123456" in shipped
    assert "trustno1" in shipped
    assert GOOD not in shipped
    started = time.perf_counter()
    for _ in range(10_000):
        _ = GOOD in shipped
    per_check = (time.perf_counter() - started) / 10_000
    assert per_check < 50e-6  # microseconds, with room for a busy machine


def test_context_words_are_refused(policy: PasswordPolicy) -> None:
    result = policy.check("my-alice.smith-secret-place", user_inputs=("alice.smith@example.org",))
    assert result.codes == (PasswordReasonCode.CONTEXT_WORD,)
    assert policy.check("the bastion demo is great", user_inputs=()).codes == (
        PasswordReasonCode.CONTEXT_WORD,
    )
    assert context_words("Alice.Smith@Example.org") >= {"alice", "smith", "example"}
    assert "org" not in context_words("alice@example.org")


def test_repetitive_and_sequential_are_refused(policy: PasswordPolicy) -> None:
    for password in ("aaaaaaaaaaaaaaaa", "abcabcabcabcabcabc", "abcdefghijklmnop", "987654321"):
        assert PasswordReasonCode.REPETITIVE in policy.check(password).codes, password


def test_every_reason_is_reported_at_once(policy: PasswordPolicy) -> None:
    result = policy.check("alice", user_inputs=("alice",))
    assert set(result.codes) >= {PasswordReasonCode.TOO_SHORT, PasswordReasonCode.CONTEXT_WORD}
    assert all(message.endswith(".") for message in result.messages)


def test_too_long_and_unencodable_are_reasons_not_exceptions(policy: PasswordPolicy) -> None:
    assert policy.check("x" * 1_000_000).codes == (PasswordReasonCode.TOO_LONG,)
    assert policy.check("lone \ud800 surrogate pass").codes == (
        PasswordReasonCode.INVALID_CHARACTERS,
    )


def test_composition_rules_are_opt_in() -> None:
    strict = PasswordPolicy(composition=CompositionRules())
    result = strict.check("all lower case words here")
    assert set(result.codes) == {
        PasswordReasonCode.NEEDS_UPPERCASE,
        PasswordReasonCode.NEEDS_DIGIT,
        PasswordReasonCode.NEEDS_SYMBOL,
    }
    assert strict.check("All lower case words 4 here!").ok


def test_generator_is_random_and_meets_rules() -> None:
    rules = CompositionRules()
    passwords = {generate_password(20, composition=rules) for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 20
        assert rules.check(password) == ()
    with pytest.raises(ConfigurationError, match="length"):
        generate_password(4)
    with pytest.raises(ConfigurationError, match="alphabet"):
        generate_password(20, alphabet="abcdefghijkl", composition=rules)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"min_length": 0}, "min_length"),
        ({"min_length": 10, "min_length_with_second_factor": 12}, "min_length_with_second_factor"),
        ({"min_length": 50, "max_length": 40, "min_length_with_second_factor": 8}, "min_length"),
        ({"site_words": "example"}, "site_words"),
        ({"blocklist": {"password"}}, "blocklist"),
    ],
)
def test_bad_policy_settings_name_the_setting(settings: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        PasswordPolicy(**settings)  # type: ignore[arg-type]
    assert caught.value.setting == setting


# --- the blocklist format ---------------------------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=30), max_size=50), st.text(min_size=1, max_size=30))
def test_blocklist_round_trip(entries: list[str], probe: str) -> None:
    blocklist = Blocklist.from_bytes(encode_blocklist(entries))
    for entry in entries:
        assert entry in blocklist
    forms = {blocklist_form(entry) for entry in entries}
    if blocklist_form(probe) not in forms:
        assert probe not in blocklist
    assert len(blocklist) == len(forms)


def test_damaged_blocklist_data_is_refused() -> None:
    data = encode_blocklist(["one", "two", "three"])
    with pytest.raises(ConfigurationError, match="header"):
        Blocklist.from_bytes(b"not a blocklist at all")
    with pytest.raises(ConfigurationError, match="damaged"):
        Blocklist.from_bytes(data[:-3])
    assert 12 not in Blocklist.from_bytes(data)  # non-text is simply absent


def test_default_policy_uses_the_shipped_blocklist() -> None:
    policy = default_policy(min_length=12, min_length_with_second_factor=8)
    assert policy.blocklist is not None
    assert PasswordReasonCode.BLOCKLISTED in policy.check("1qaz2wsx3edc").codes


# --- the breached-password hook ---------------------------------------------------------------


def test_range_query_splits_the_sha1() -> None:
    prefix, suffix = breach_range_query("password")
    assert prefix == "5BAA6"
    assert suffix == "1E4C9B93F3F0682250B6CF8331B7EE68FD8"


@given(st.text(max_size=300), st.text(max_size=40))
def test_range_parser_is_total(body: str, suffix: str) -> None:
    assert parse_breach_range(body, suffix) >= 0


def test_range_parser_reads_counts() -> None:
    body = (
        "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n"
        "ABC:bad\r\n"
        "1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824"
    )
    assert parse_breach_range(body, "1e4c9b93f3f0682250b6cf8331b7ee68fd8") == 9_545_824
    assert parse_breach_range(body, "ABC") == 0
    assert parse_breach_range(body, "FFFF") == 0


@pytest.mark.asyncio
async def test_breach_hook_refuses_a_breached_password(policy: PasswordPolicy) -> None:
    breached = "correct horse battery staple jumps"
    checker = BreachChecker(OfflineRangeSource([breached, breached]), threshold=2)
    assert await checker.count(breached) == 2
    result = await check_new_password(policy, breached, breach=checker)
    assert result.codes == (PasswordReasonCode.BREACHED,)
    assert (await check_new_password(policy, GOOD, breach=checker)).ok
    assert (await check_new_password(policy, breached)).ok  # off by default


class _BrokenSource:
    async def fetch_range(self, prefix: str) -> str:
        raise ConnectionError("service down")


@pytest.mark.asyncio
async def test_breach_source_failure_fails_open_with_a_log(
    policy: PasswordPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    checker = BreachChecker(_BrokenSource())
    with caplog.at_level("WARNING", logger="bastion.security.passwords"):
        result = await check_new_password(policy, GOOD, breach=checker)
    assert result.ok
    assert "breached-password source failed" in caplog.text
    assert GOOD not in caplog.text
