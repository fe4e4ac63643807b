"""A streamed upload in several requests (`RegistryClient.stage_blob_stream`) against a real
registry: the blob is stored whole once committed, and a stream its reader refuses half-way
leaves nothing in the registry's storage, whichever request it breaks in."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from installer.engines.registry import RegistryClient
from installer.errors import BadInputError
from tests.fixtures.registries import Registry
from tests.integration.airgap.helpers import stored_files

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 12345)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _pieces(data: bytes, fail_at: int | None = None) -> Iterator[bytes]:
    """`data` in 300 KiB pieces; the reader's refusal once `fail_at` bytes have gone by."""
    step, sent = 300 * 1024, 0
    while sent < len(data):
        if fail_at is not None and sent >= fail_at:
            raise BadInputError("blob: sha256 mismatch (the reader's refusal)")
        yield data[sent : sent + step]
        sent += step
    if fail_at is not None:
        raise BadInputError("blob: sha256 mismatch (found at the end)")


def test_a_blob_sent_in_several_requests_is_stored_whole(empty_registry: Registry) -> None:
    with RegistryClient(empty_registry.endpoint(), patch_chunk=MIB) as client:
        location = client.stage_blob_stream("test/app", DIGEST, len(DATA), _pieces(DATA))
        assert location is not None
        assert not client.blob_exists("test/app", DIGEST)  # staged, not stored
        assert client.commit_upload("test/app", DIGEST, location)
        assert client.blob_exists("test/app", DIGEST)
    with empty_registry.http() as http:
        assert http.get(f"/v2/test/app/blobs/{DIGEST}").content == DATA


@pytest.mark.parametrize("fail_at", [0, MIB // 2, 2 * MIB + 1, None], ids=str)
def test_a_refused_stream_leaves_nothing_in_the_registry(
    empty_registry: Registry, fail_at: int | None
) -> None:
    """Refused in the first, a middle or the last request, or at the end (digest check): the
    error is passed on, and no blob or upload data stays (`stored_files`)."""
    refused_at = fail_at if fail_at is not None else len(DATA)
    with RegistryClient(empty_registry.endpoint(), patch_chunk=MIB) as client:
        with pytest.raises(BadInputError, match="sha256 mismatch"):
            client.stage_blob_stream(
                "test/app", DIGEST, len(DATA), _pieces(DATA, fail_at=refused_at)
            )
        assert not client.blob_exists("test/app", DIGEST)
    assert stored_files(empty_registry) == []
