"""Hash tags and Redis Cluster key slots (pure Python; the real-cluster check is in
test_store_redis.py)."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot as redis_key_slot

from bastion.errors import StoreError
from bastion.stores.keyspace import KEY_SLOTS, crc16_xmodem, hash_tag, key_slot


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0x0000),
        (b"123456789", 0x31C3),  # the CRC-16/XMODEM check value
        (b"A", 0x58E5),
    ],
)
def test_crc16_known_values(data: bytes, crc: int) -> None:
    assert crc16_xmodem(data) == crc


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("123456789", 12739),  # 0x31C3 % 16384
        ("foo", 12182),  # from the Redis Cluster specification and CLUSTER KEYSLOT docs
        ("somekey", 11058),
        ("{user1000}.following", key_slot("user1000")),
        ("foo{}{bar}", key_slot("foo{}{bar}")),  # empty first tag: the whole key is hashed
        ("foo{{bar}}zap", key_slot("{bar")),  # the tag is "{bar"
        ("foo{bar}{zap}", key_slot("bar")),  # only the first tag counts
    ],
)
def test_key_slot_known_values(key: str, slot: int) -> None:
    assert key_slot(key) == slot
    assert key_slot(key.encode()) == slot


def test_key_slot_rules_are_not_vacuous() -> None:
    # The rows above that refer to key_slot() itself only mean something if the hashed part
    # really changes the slot.
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("{bar") != key_slot("bar")


@given(st.binary(max_size=64))
def test_crc16_matches_the_standard_library(data: bytes) -> None:
    # binascii.crc_hqx is CRC-CCITT with the initial value given: 0 makes it XMODEM.
    assert crc16_xmodem(data) == binascii.crc_hqx(data, 0)


@given(st.binary(max_size=64))
def test_key_slot_matches_redis_py(data: bytes) -> None:
    assert key_slot(data) == redis_key_slot(data)
    assert 0 <= key_slot(data) < KEY_SLOTS


def test_hash_tag_shape() -> None:
    assert hash_tag("sessions", "user-42") == "sessions:{user-42}"
    assert hash_tag("s", "a{b}c%") == "s:{a%7Bb%7Dc%25}"


@given(st.text(min_size=1), st.text(), st.text())
def test_hash_tagged_keys_share_a_slot(ident: str, ns1: str, ns2: str) -> None:
    ns1 = ns1.replace("{", "").replace("}", "")
    ns2 = ns2.replace("{", "").replace("}", "")
    prefix = "bastion:"
    try:
        a = prefix + hash_tag(ns1, ident) + ":tail}{x}"
        b = prefix + hash_tag(ns2, ident)
        a.encode()
        b.encode()
    except UnicodeEncodeError:
        return  # lone surrogates are not valid keys; check_key refuses them
    assert key_slot(a) == key_slot(b) == key_slot(hash_tag("", ident))


@given(st.text(min_size=1), st.text(min_size=1))
def test_hash_tag_is_injective(a: str, b: str) -> None:
    if a != b:
        assert hash_tag("n", a) != hash_tag("n", b)


@pytest.mark.parametrize(("namespace", "ident"), [("a{b", "x"), ("a}b", "x"), ("n", "")])
def test_hash_tag_refuses_what_would_break_the_tag(namespace: str, ident: str) -> None:
    with pytest.raises(StoreError, match="hash_tag"):
        hash_tag(namespace, ident)
