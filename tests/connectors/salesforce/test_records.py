"""The connector against the Salesforce sandbox through simple-salesforce over TLS: the
three OAuth flows, one shared refresh, fetch, writes, batches, describe, error mapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.base import Patch, RecordRef, WriteStatus
from connectors.salesforce.sandbox import (
    INTEGRATION_USER,
    PASSWORD,
    SECURITY_TOKEN,
    USERNAME,
    SalesforceSandbox,
)
from core.errors import ConnectorConfigInvalid, ConnectorTerminalError, ConnectorTransientError
from tests.connectors.salesforce.conftest import SECRETS, MemoryState, lead_id


def patches(org: SalesforceSandbox) -> int:
    return sum(1 for method, _ in org.requests if method == "PATCH")


# ------------------------------------------------------------------------ auth


async def test_client_credentials_flow_fetches_a_record(make: Any, org: SalesforceSandbox) -> None:
    record = await make().fetch(RecordRef("Lead", lead_id(org)), ["Company", "Description"])
    assert record.fields["Company"] == "Brightline Freight"
    assert set(record.fields) == {"Company", "Description"}
    assert record.version == org.record("Lead", record.record_id)["LastModifiedDate"]


async def test_password_flow_for_developer_orgs(make: Any, org: SalesforceSandbox) -> None:
    secrets = {**SECRETS, "password": PASSWORD, "security_token": SECURITY_TOKEN}
    connector = make(secrets, auth_flow="password", username=USERNAME)
    assert (await connector.fetch(RecordRef("Lead", lead_id(org)))).fields["LastName"] == "Okafor"


async def test_jwt_bearer_flow_signs_an_assertion_the_org_verifies(
    make: Any, org: SalesforceSandbox, rsa_key: tuple[str, str], server: Any
) -> None:
    secrets = {"client_id": SECRETS["client_id"], "private_key": rsa_key[0]}
    connector = make(secrets, auth_flow="jwt_bearer", username=USERNAME, jwt_audience=server.url)
    assert (await connector.fetch(RecordRef("Lead", lead_id(org)))).fields["LastName"] == "Okafor"


async def test_wrong_credentials_fail_terminally_with_salesforces_reason(make: Any) -> None:
    connector = make({**SECRETS, "client_secret": "wrong"})
    with pytest.raises(ConnectorTerminalError, match="invalid_client"):
        await connector.fetch(RecordRef("Lead", "00Q5g0000000001EAA"))


async def test_credentials_of_another_org_are_refused(make: Any) -> None:
    connector = make(organization_id="00D000000000001AAA")
    with pytest.raises(ConnectorTerminalError, match=r"not to config\.organization_id"):
        await connector.fetch(RecordRef("Lead", "00Q5g0000000001EAA"))


def test_a_flow_without_its_secrets_is_refused(make: Any) -> None:
    with pytest.raises(ConnectorConfigInvalid, match="private_key"):
        make({"client_id": "x"}, auth_flow="jwt_bearer", username=USERNAME)


async def test_expired_session_two_workers_refresh_once_and_replay(
    make: Any, org: SalesforceSandbox, state: MemoryState
) -> None:
    first, second = make(), make()  # two workers of one connection: one state store
    ref = RecordRef("Lead", lead_id(org))
    await first.fetch(ref)
    await second.fetch(ref)
    assert org.token_requests == 1  # the second adopted the stored token
    org.expire_sessions()

    records = await asyncio.gather(first.fetch(ref), second.fetch(ref))

    assert [r.fields["Company"] for r in records] == ["Brightline Freight"] * 2
    assert org.token_requests == 2  # one refresh for both
    assert state.values["oauth"]["instance_url"] == org_url(make)


def org_url(make: Any) -> str:
    return str(make().tokens._config.login_url).rstrip("/")


# ---------------------------------------------------------------------- writes


async def test_update_writes_as_the_integration_user(make: Any, org: SalesforceSandbox) -> None:
    connector, record_id = make(), lead_id(org)
    record = await connector.fetch(RecordRef("Lead", record_id))
    patch = Patch("Lead", record_id, {"Rating": "Hot"}, expected_version=record.version)

    result = await connector.write(patch, "job-1")

    assert result.status is WriteStatus.WRITTEN
    stored = org.record("Lead", record_id)
    assert (stored["Rating"], stored["LastModifiedById"]) == ("Hot", INTEGRATION_USER)


async def test_a_record_changed_since_it_was_read_is_a_conflict(
    make: Any, org: SalesforceSandbox
) -> None:
    stale = "2020-01-01T00:00:00.000+0000"
    patch = Patch("Lead", lead_id(org), {"Rating": "Hot"}, expected_version=stale)

    result = await make().write(patch, "job-2")

    assert result.status is WriteStatus.CONFLICT
    assert org.record("Lead", lead_id(org))["Rating"] is None


async def test_a_retried_job_never_sends_its_patch_twice(make: Any, org: SalesforceSandbox) -> None:
    connector, record_id = make(), lead_id(org)
    patch = Patch("Lead", record_id, {"Rating": "Warm"})
    await connector.write(patch, "job-3")
    sent = patches(org)

    again = await make().write(patch, "job-3")  # another worker, after a crash

    assert again.status is WriteStatus.WRITTEN
    assert "earlier attempt" in again.detail
    assert patches(org) == sent


async def test_a_retried_create_upserts_one_record(
    make: Any, org: SalesforceSandbox, state: MemoryState
) -> None:
    connector = make()
    patch = Patch("Lead", None, {"LastName": "Ng", "Company": "Ng Robotics", "Status": "Qualified"})
    before = len(org.ids("Lead"))
    first = await connector.write(patch, "job-4")
    state.values.pop("write:job-4")  # the first attempt crashed before recording it
    retried = await connector.write(patch, "job-4")

    assert retried.record_id == first.record_id
    assert len(org.ids("Lead")) == before + 1
    assert org.record("Lead", first.record_id)["Switchyard_Key__c"] == "job-4"


async def test_picklist_values_are_checked_before_anything_is_sent(
    make: Any, org: SalesforceSandbox
) -> None:
    connector = make()
    await connector.describe("Lead")
    sent = patches(org)
    with pytest.raises(ConnectorTerminalError, match="Rating does not accept 'Lukewarm'"):
        await connector.write(Patch("Lead", lead_id(org), {"Rating": "Lukewarm"}), "job-5")
    assert patches(org) == sent


async def test_batch_update_reports_each_record_and_a_retry_resends_only_failures(
    make: Any, org: SalesforceSandbox
) -> None:
    org.add_validation_rule(
        "Lead",
        "Cold leads need a reason",
        lambda r: r["Rating"] == "Cold" and not r["Qualification_Reason__c"],
        field="Qualification_Reason__c",
    )
    maya, tom = lead_id(org), lead_id(org, "Berg & Sons Bakery")
    batch = [Patch("Lead", maya, {"Rating": "Hot"}), Patch("Lead", tom, {"Rating": "Cold"})]
    connector = make()

    first = await connector.write_many(batch, "job-6")

    assert first[0].status is WriteStatus.WRITTEN  # type: ignore[union-attr]
    assert isinstance(first[1], ConnectorTerminalError)
    assert first[1].extensions["error_code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "Cold leads need a reason" in first[1].detail
    assert org.record("Lead", maya)["Rating"] == "Hot"
    org.store.rules.clear()
    org.change("Lead", maya, Rating="Warm")  # someone edits it meanwhile

    retried = await connector.write_many(batch, "job-6")

    assert [r.status for r in retried] == [WriteStatus.WRITTEN] * 2  # type: ignore[union-attr]
    assert org.record("Lead", maya)["Rating"] == "Warm"  # not applied a second time
    assert org.record("Lead", tom)["Rating"] == "Cold"


async def test_describe_gives_types_picklists_and_updateable_flags(make: Any) -> None:
    fields = {f.name: f for f in await make().describe("Case")}
    assert fields["AI_Sentiment__c"].picklist_values == ("positive", "neutral", "negative")
    assert fields["AI_Sentiment__c"].type == "picklist"
    assert fields["CaseNumber"].updateable is False
    assert fields["Subject"].updateable is True


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ("REQUEST_LIMIT_EXCEEDED", 300.0),
        ("UNABLE_TO_LOCK_ROW", 2.0),
        ("SERVER_UNAVAILABLE", 2.0),
        ("UNKNOWN_EXCEPTION", None),
    ],
)
async def test_transient_faults_are_retryable(
    make: Any, org: SalesforceSandbox, fault: str, retry_after: float | None
) -> None:
    org.fail_next(fault)
    with pytest.raises(ConnectorTransientError) as caught:
        await make().fetch(RecordRef("Lead", lead_id(org)))
    assert fault in caught.value.detail
    assert caught.value.retry_after == retry_after


async def test_the_daily_limit_is_a_403_and_retryable(make: Any, org: SalesforceSandbox) -> None:
    org.api_used = org.api_limit
    with pytest.raises(ConnectorTransientError, match="REQUEST_LIMIT_EXCEEDED"):
        await make().fetch(RecordRef("Lead", lead_id(org)))


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"Nope__c": 1}, "INVALID_FIELD"), ({"CaseNumber": "1"}, "INVALID_FIELD_FOR_INSERT_UPDATE")],
)
async def test_field_errors_fail_the_job_with_the_reason(
    make: Any, org: SalesforceSandbox, fields: dict[str, Any], code: str
) -> None:
    case = org.ids("Case")[0]
    with pytest.raises(ConnectorTerminalError, match=code) as caught:
        await make().write(Patch("Case", case, fields), f"job-{code}")
    assert caught.value.extensions["fields"] == list(fields)


async def test_validation_rule_fails_the_job(make: Any, org: SalesforceSandbox) -> None:
    org.add_validation_rule(
        "Case",
        "Closed cases need a summary",
        lambda r: r["Status"] == "Closed" and not r["AI_Summary__c"],
    )
    with pytest.raises(ConnectorTerminalError, match="FIELD_CUSTOM_VALIDATION_EXCEPTION"):
        await make().write(Patch("Case", org.ids("Case")[0], {"Status": "Closed"}), "job-7")


async def test_a_slow_answer_times_out_as_transient(make: Any, org: SalesforceSandbox) -> None:
    org.fail_next("SLOW", delay=2.0)
    with pytest.raises(ConnectorTransientError, match="timed out"):
        await make(timeout_seconds=0.5).fetch(RecordRef("Lead", lead_id(org)))


async def test_api_usage_slows_down_then_holds_back(make: Any, org: SalesforceSandbox) -> None:
    connector = make()
    ref = RecordRef("Lead", lead_id(org))
    org.api_used = 94_000  # 94% of 100,000: above the 90% soft limit
    await connector.fetch(ref)
    assert 0 < connector.budget.delay() < 2.0
    org.api_used = 98_500
    await connector.fetch(ref)
    with pytest.raises(ConnectorTransientError, match="daily API allocation") as caught:
        await connector.fetch(ref)
    assert caught.value.retry_after == 900.0
