"""The OpenAPI document is the contract: schemathesis fuzzes every operation, with the key set,
and no answer may be a server error, a status the document does not list, or a body that
does not match its schema, a schema-valid request refused (photo uploads aside), or a method a
path does not take answered without its true Allow header. Bounded: a few dozen cases per
operation; FACEID_FUZZ_SEED and FACEID_FUZZ_EXAMPLES widen the hunt."""

import os

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from app.config import Settings
from app.main import create_app

KEY = "fuzz-key-0123456789abcdef"
FUZZ_EXAMPLES = int(os.environ.get("FACEID_FUZZ_EXAMPLES", "150"))  # per operation; raise it for a longer hunt
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, unsupported_method,
          allow_header_conformance]
# Schema-valid requests are accepted, except where the schema cannot say the rule: an upload's
# bytes must be a decodable photo with a face in it (or a gallery export), which no schema
# expresses, nor that /verify takes a second photo or a person, one of the two.
PHOTO_UPLOADS = {"/identify", "/enroll", "/verify", "/detect", "/import"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "gallery", weights="casia-webface", device="cpu",
                        api_key=KEY, max_upload_bytes=64 * 1024, max_images_per_enroll=4)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.seed(int(os.environ.get("FACEID_FUZZ_SEED", "0")))
@hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_keeps_its_contract(case):
    checks = CHECKS if case.operation.path in PHOTO_UPLOADS else [*CHECKS, positive_data_acceptance]
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=checks)
