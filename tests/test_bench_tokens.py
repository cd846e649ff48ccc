"""The ``tokens`` bench group builds, proves each verifier, and counts rotations.

No timing is asserted. The group is built on the shared Redis server (the ``redis_url``
fixture) and every case runs once; the set-up proof is shown to refuse a verifier that checks
nothing; the SQLite transaction counter is checked on a known statement log; the instruction
rows exist with the right baselines.
"""

from __future__ import annotations

import warnings

import pytest
from bench.group import Options
from bench.groups import GROUP_NAMES, load_group
from bench.groups.tokens import (
    ALGORITHMS,
    AUDIENCE,
    CODEC_ONLY,
    JOSERFC,
    OURS,
    PYJWT,
    SUBJECT,
    VS_JOSERFC,
    _prove,
    build_verifiers,
    have_codec,
    make_fixture,
    token_cases,
)
from bench.groups.tokens_refresh import available, transactions
from bench.instructions import CASES


def test_tokens_is_a_registered_group() -> None:
    assert "tokens" in GROUP_NAMES
    assert load_group("tokens").name == "tokens"


@pytest.mark.asyncio
async def test_every_case_is_proved_and_runs_once(redis_url: str) -> None:
    async with token_cases(Options(redis_url=redis_url)) as cases:
        by_name = {case.name: case for case in cases}
        assert len(by_name) == len(cases)
        for alg in ALGORITHMS:
            assert by_name[f"{alg}: {PYJWT}"].baseline is None
            assert by_name[f"{alg}: {JOSERFC}"].baseline == f"{alg}: {PYJWT}"
            if have_codec():
                assert by_name[f"{alg}: {CODEC_ONLY}"].baseline == f"{alg}: {PYJWT}"
                assert by_name[f"{alg}: {OURS}"].baseline == f"{alg}: {PYJWT}"
                assert by_name[f"{alg}: {VS_JOSERFC}"].baseline == f"{alg}: {JOSERFC}"
        rotations = [name for name in by_name if "RefreshTokens.rotate" in name]
        if available():
            assert any(n.startswith("sqlite: RefreshTokens.rotate (") for n in rotations)
            assert any(n.startswith("redis: RefreshTokens.rotate (") for n in rotations)
            assert all("/rotation" in n for n in rotations)
            assert any("round trips/rotation" in n for n in rotations)
        else:
            assert rotations == []
        for case in cases:
            if case.sync_op is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    assert case.sync_op() == SUBJECT
            else:
                assert case.async_op is not None
                await case.async_op()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_verifier_refuses_another_audience(alg: str) -> None:
    from joserfc.errors import JoseError  # noqa: PLC0415
    from jwt import InvalidAudienceError  # noqa: PLC0415

    from bastion.errors import BadToken  # noqa: PLC0415

    fx = make_fixture(alg)
    warnings.simplefilter("ignore")
    for verify in build_verifiers(fx).values():
        with pytest.raises((InvalidAudienceError, JoseError, BadToken)):
            verify(fx.token, "https://other.example")


def test_the_proof_refuses_a_verifier_that_checks_nothing() -> None:
    fx = make_fixture("HS256")
    with pytest.raises(RuntimeError, match="accepted a token for another audience"):
        _prove("lax", lambda _token, _audience: SUBJECT, fx.token)
    with pytest.raises(RuntimeError, match="answered 'someone'"):
        _prove("wrong", lambda _token, _audience: "someone", fx.token)


def test_the_token_is_one_string_for_every_verifier() -> None:
    fx = make_fixture("EdDSA")
    verifiers = build_verifiers(fx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert {verify(fx.token, AUDIENCE) for verify in verifiers.values()} == {SUBJECT}


def test_transactions_count_begin_blocks_and_autocommit_writes() -> None:
    log = [
        "PRAGMA busy_timeout = 5000",
        "SELECT value FROM kv WHERE key = ?",
        "BEGIN IMMEDIATE",
        "SELECT value FROM kv WHERE key = ?",
        "UPDATE kv SET value = ? WHERE key = ?",
        "COMMIT",
        "INSERT INTO kv VALUES (?, ?, ?)",
    ]
    assert transactions(log) == (2, 1)


def test_instruction_counts_cover_the_verification_rows() -> None:
    names = {case.name: case for case in CASES}
    for alg in ALGORITHMS:
        pyjwt, joserfc = f"tokens {alg}: {PYJWT}", f"tokens {alg}: {JOSERFC}"
        assert names[pyjwt].baseline is None
        assert names[pyjwt].op is not None
        assert names[joserfc].baseline == pyjwt
        if have_codec():
            assert names[f"tokens {alg}: {OURS}"].baseline == pyjwt
            assert names[f"tokens {alg}: {CODEC_ONLY}"].baseline == pyjwt
            assert names[f"tokens {alg}: {VS_JOSERFC}"].baseline == joserfc
