"""API keys: loaded from a file, held hashed, and every refusal is a 401 that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swiftclaw_runtime.auth import ANONYMOUS, ApiKeyStore, Principal, digest
from swiftclaw_runtime.errors import ApiError


def store(tmp_path: Path, entries: list[dict[str, str]]) -> ApiKeyStore:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return ApiKeyStore.from_file(path)


def test_plain_and_hashed_keys_map_to_their_principal(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        [
            {"key": "sk-plain-000001", "tenant": "acme", "user": "alice"},
            {"sha256": digest("sk-hashed-00002").hex(), "user": "bob"},
        ],
    )
    assert s.authenticate("Bearer sk-plain-000001") == Principal("acme", "alice")
    assert s.authenticate("bearer   sk-hashed-00002") == Principal("default", "bob")


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "Missing API key"),
        ("Basic abc", "must be 'Bearer <key>'"),
        ("Bearer ", "must be 'Bearer <key>'"),
        ("Bearer sk-wrong-0000001", "Incorrect API key"),
    ],
)
def test_refusals_are_401_in_openai_shape(tmp_path: Path, header: str | None, words: str) -> None:
    s = store(tmp_path, [{"key": "sk-plain-000001", "user": "alice"}])
    with pytest.raises(ApiError) as info:
        s.authenticate(header)
    assert info.value.status == 401
    assert words in info.value.message
    assert info.value.body()["error"]["type"] == "authentication_error"


def test_no_plaintext_is_kept(tmp_path: Path) -> None:
    s = store(tmp_path, [{"key": "sk-plain-000001", "user": "alice"}])
    assert b"sk-plain-000001" not in repr(vars(s)).encode()


def test_missing_file_refuses_everyone_unless_auth_is_off(tmp_path: Path) -> None:
    s = ApiKeyStore.from_file(tmp_path / "none.yaml")
    with pytest.raises(ApiError):
        s.authenticate("Bearer anything-at-all")
    assert (
        ApiKeyStore.from_file(tmp_path / "none.yaml", required=False).authenticate(None)
        == ANONYMOUS
    )


def test_invalid_keys_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump({"keys": [{"key": "sk-x-00000001", "sha256": "ab", "user": "u"}]})
    )
    with pytest.raises(ValueError, match=r"keys\.yaml is invalid"):
        ApiKeyStore.from_file(path)
