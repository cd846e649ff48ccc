"""The ``crypto`` bench group builds, proves each case and runs it once (no timing asserted)."""

from __future__ import annotations

import pytest
from bench.group import Options
from bench.groups import GROUP_NAMES, load_group
from bench.groups.crypto import (
    GUIDE_DECRYPT,
    GUIDE_ENCRYPT,
    VALUE,
    GuideEncryptionService,
    crypto_cases,
    sizes,
)


def test_crypto_is_a_registered_group() -> None:
    assert "crypto" in GROUP_NAMES
    assert load_group("crypto").name == "crypto"


def test_sizes_of_the_32_byte_value() -> None:
    assert len(VALUE.encode()) == 32
    assert sizes() == {
        "guide Fernet": 140,
        "bastion aes-256-gcm": 88,
        "bastion aes-256-gcm-siv": 88,
    }


def test_the_guide_service_is_the_fixed_salt_recipe() -> None:
    first = GuideEncryptionService("correct horse battery staple")
    second = GuideEncryptionService("correct horse battery staple")
    token = first.encrypt(VALUE)
    assert second.decrypt(token) == VALUE  # same passphrase, same key: the salt is fixed


@pytest.mark.asyncio
async def test_every_case_runs_and_names_its_baseline() -> None:
    async with crypto_cases(Options()) as cases:
        by_name = {case.name: case for case in cases}
        assert len(by_name) == len(cases) == 6
        encrypt = f"{GUIDE_ENCRYPT} (140 chars)"
        decrypt = f"{GUIDE_DECRYPT} (140 chars)"
        assert by_name[encrypt].baseline is None
        assert by_name[decrypt].baseline is None
        for algorithm in ("aes-256-gcm", "aes-256-gcm-siv"):
            assert by_name[f"bastion {algorithm} encrypt_field (88 chars)"].baseline == encrypt
            assert by_name[f"bastion {algorithm} decrypt_field (88 chars)"].baseline == decrypt
        results = []
        for case in cases:
            assert case.sync_op is not None
            results.append(case.sync_op())
        assert results[1] == VALUE
        assert results[3] == VALUE
        assert all(isinstance(r, str) and r for r in results)
