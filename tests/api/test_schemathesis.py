"""The API against its own OpenAPI schema (issue 12): schemathesis generates requests from
``/api/schema/`` and sends them over HTTP to a live server, as an operator, as a rater and
anonymously. Gate: no server error and no answer the schema does not describe (status code,
content type, body). Bounded: a few derandomized examples per operation, no deadline."""

from __future__ import annotations

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, given, settings

from tests.conftest import staff_user

# A few derandomized examples per operation: bounded time, the same requests every run.
SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


def _cookie_header(client: Client) -> str:
    return "; ".join(f"{k}={v.value}" for k, v in client.cookies.items())


@pytest.fixture
def role_headers(transactional_db, django_user_model) -> dict[str, dict[str, str]]:
    from deidplatform.permissions import OPERATOR
    from tests.ratings.factories import add_pairs, make_campaign

    operator = Client()
    operator.force_login(staff_user(django_user_model, "schema-op", OPERATOR))
    campaign = make_campaign()
    add_pairs(campaign, 2)
    rater = Client()
    rater.get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": "SCHEMA1"})
    csrf = rater.cookies["csrftoken"].value if "csrftoken" in rater.cookies else ""
    return {
        "operator": {"Cookie": _cookie_header(operator)},
        "rater": {"Cookie": _cookie_header(rater), "X-CSRFToken": csrf},
        "anonymous": {},
    }


@pytest.mark.slow
def test_api_conforms_to_its_schema(live_server, role_headers):
    """Every operation, a few generated requests each, in every role; the failures are
    collected (no shrinking) and listed together."""
    schema = schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/?format=json", headers=role_headers["operator"]
    )
    failures: list[str] = []
    operations = 0

    def check(case) -> None:
        for role, headers in role_headers.items():
            try:
                case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)
            except BaseException as exc:  # a FailureGroup names every failed check
                failures.append(f"{case.operation.label} as {role}: {str(exc)[:1500]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        given(case=operation.as_strategy())(SETTINGS(lambda case: check(case)))()
    assert operations > 10
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(failures[:40])
