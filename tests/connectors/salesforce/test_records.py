"""The connector against the Salesforce sandbox through simple-salesforce over TLS: the
three OAuth flows, one shared refresh, fetch, writes, batches, describe, error mapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import Patch, RecordRef, WriteStatus
from connectors.salesforce.sandbox import (
    INTEGRATION_USER,
    PASSWORD,
    SECURITY_TOKEN,
    USERNAME,
    SalesforceSandbox,
)
from connectors.salesforce.sandbox_seed import BILLING_CASE, MASTER_RECORD_TYPE
from core.errors import ConnectorConfigInvalid, ConnectorTerminalError, ConnectorTransientError
from tests.connectors.salesforce.conftest import SECRETS, lead_id
from tests.connectors.support import MemoryState


def patches(org: SalesforceSandbox) -> int:
    return sum(1 for method, _ in org.requests if method == "PATCH")


def picklist_calls(org: SalesforceSandbox) -> list[str]:
    """The record types whose UI API picklist values were asked for, in order."""
    return [path.rsplit("/", 1)[1] for _, path in org.requests if "/picklist-values/" in path]


def billing_case(org: SalesforceSandbox) -> str:
    return next(i for i in org.ids("Case") if org.record("Case", i)["RecordTypeId"] == BILLING_CASE)


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


async def test_a_value_describe_allows_but_the_records_type_does_not_is_refused_unsent(
    make: Any, org: SalesforceSandbox
) -> None:
    case = billing_case(org)
    assert "Low" in {f.name: f for f in await make().describe("Case")}["Priority"].picklist_values
    sent = patches(org)

    with pytest.raises(ConnectorTerminalError, match="record type 'Billing'") as caught:
        await make().write(Patch("Case", case, {"Priority": "Low"}), "job-rt-1")

    assert caught.value.extensions["error_code"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert caught.value.extensions["fields"] == ["Priority"]
    assert "its values: High, Medium" in caught.value.detail
    assert patches(org) == sent
    assert org.record("Case", case)["Priority"] == "High"


async def test_the_org_itself_refuses_a_value_outside_the_records_type(
    make: Any, org: SalesforceSandbox
) -> None:
    connector = make()  # past the connector's check, straight to the REST API
    with pytest.raises(ConnectorTerminalError, match="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"):
        await connector.client.update("Case", billing_case(org), {"Priority": "Low"}, {})
    assert org.record("Case", billing_case(org))["Priority"] == "High"


async def test_a_value_the_records_type_allows_is_written(
    make: Any, org: SalesforceSandbox
) -> None:
    case = billing_case(org)
    result = await make().write(Patch("Case", case, {"Priority": "Medium"}), "job-rt-2")
    assert result.status is WriteStatus.WRITTEN
    assert org.record("Case", case)["Priority"] == "Medium"
    assert picklist_calls(org) == [BILLING_CASE]
    assert ("GET", f"/services/data/v59.0/sobjects/Case/{case}") in org.requests


async def test_a_create_is_checked_against_the_default_record_type(
    make: Any, org: SalesforceSandbox
) -> None:
    connector = make(external_id_fields={"Case": "Switchyard_Key__c"})
    patch = Patch("Case", None, {"Subject": "Card declined", "Priority": "Low"})

    result = await connector.write(patch, "job-rt-3")

    assert picklist_calls(org) == [MASTER_RECORD_TYPE]  # describe's default mapping
    assert org.record("Case", result.record_id)["RecordTypeId"] == MASTER_RECORD_TYPE
    assert not [p for m, p in org.requests if m == "GET" and "/sobjects/Case/500" in p]


async def test_a_create_is_checked_against_the_record_type_it_names(
    make: Any, org: SalesforceSandbox
) -> None:
    connector = make(external_id_fields={"Case": "Switchyard_Key__c"})
    fields = {"Subject": "Refund", "RecordTypeId": BILLING_CASE, "Priority": "Low"}
    before = len(org.ids("Case"))

    with pytest.raises(ConnectorTerminalError, match=r"Case\.Priority does not accept 'Low'"):
        await connector.write(Patch("Case", None, fields), "job-rt-4")
    written = await connector.write(Patch("Case", None, {**fields, "Priority": "High"}), "job-rt-5")

    assert picklist_calls(org) == [BILLING_CASE]
    assert len(org.ids("Case")) == before + 1
    assert org.record("Case", written.record_id)["RecordTypeId"] == BILLING_CASE


async def test_an_object_without_record_types_costs_no_extra_call(
    make: Any, org: SalesforceSandbox
) -> None:
    connector, lead = make(), lead_id(org)
    await connector.describe("Lead")
    before = len(org.requests)

    await connector.write(Patch("Lead", lead, {"Status": "Qualified"}), "job-rt-6")  # restricted

    assert org.requests[before:] == [("PATCH", f"/services/data/v59.0/sobjects/Lead/{lead}")]


async def test_an_unrestricted_picklist_costs_no_extra_call(
    make: Any, org: SalesforceSandbox
) -> None:
    connector, case = make(), billing_case(org)
    await connector.describe("Case")
    before = len(org.requests)

    await connector.write(Patch("Case", case, {"Origin": "Web"}), "job-rt-7")

    assert org.requests[before:] == [("PATCH", f"/services/data/v59.0/sobjects/Case/{case}")]


async def test_a_record_types_values_are_cached(make: Any, org: SalesforceSandbox) -> None:
    connector, case = make(), billing_case(org)
    await connector.write(Patch("Case", case, {"Priority": "Medium"}), "job-rt-8")
    with pytest.raises(ConnectorTerminalError, match="record type 'Billing'"):
        await connector.write(Patch("Case", case, {"Priority": "Low"}), "job-rt-9")
    assert picklist_calls(org) == [BILLING_CASE]


async def test_an_unknown_record_type_is_not_found(make: Any, org: SalesforceSandbox) -> None:
    with pytest.raises(ConnectorTerminalError, match="NOT_FOUND"):
        await make().client.picklist_values("Case", "0125g000000NoNeAAA")
    collection = await make().client.picklist_values("Case", BILLING_CASE)
    priority = collection["picklistFieldValues"]["Priority"]
    assert [v["value"] for v in priority["values"]] == ["High", "Medium"]
    assert set(priority) == {"controllerValues", "defaultValue", "eTag", "url", "values"}


async def test_a_batch_reads_the_record_types_in_one_query_and_sends_nothing_wrong(
    make: Any, org: SalesforceSandbox
) -> None:
    billing = billing_case(org)
    other = next(i for i in org.ids("Case") if i != billing)
    batch = [Patch("Case", other, {"Priority": "Low"}), Patch("Case", billing, {"Priority": "Low"})]
    sent = patches(org)

    with pytest.raises(ConnectorTerminalError, match="record type 'Billing'"):
        await make().write_many(batch, "job-rt-10")

    assert patches(org) == sent
    assert sum(1 for _, path in org.requests if path.rstrip("/").endswith("/query")) == 1
    assert picklist_calls(org) == [MASTER_RECORD_TYPE, BILLING_CASE]


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


def test_api_versions_without_the_ui_api_are_refused(make: Any) -> None:
    with pytest.raises(ValidationError, match=r"api_version must be 41\.0 or later"):
        make(api_version="40.0")
