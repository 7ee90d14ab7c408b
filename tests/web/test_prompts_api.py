"""The prompt registry and rollouts API through the real app: listing, roles, the rollout
life cycle (start → change → rollback → end), its history and audit, and clear errors."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from core.db.models import AuditEntry, Role
from core.services import Services
from tests.web.support import TenantKeys, assert_problem

PROMPT = "ticket_test"
ROLLOUT = f"/v1/prompts/{PROMPT}/rollout"


async def test_the_registry_lists_versions_users_and_no_rollout(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.get("/v1/prompts", headers=tenant_a.headers(Role.REVIEWER))
    assert response.status_code == 200
    (prompt,) = [p for p in response.json()["data"] if p["name"] == PROMPT]
    assert [v["ref"] for v in prompt["versions"]] == [f"{PROMPT}@{n}" for n in (1, 2, 3)]
    first = prompt["versions"][0]
    assert first["slots"] == ["body", "customer", "subject"]
    assert (first["used"], first["edited"]) == (False, False)
    assert {u["flow"] for u in prompt["flows"]} >= {"webhook/ticket_updates"}
    assert prompt["rollout"] is None


async def test_a_rollout_goes_from_start_to_end_with_history_and_audit(
    client: httpx.AsyncClient, tenant_a: TenantKeys, services: Services
) -> None:
    started = await client.put(
        ROLLOUT, json={"candidate_version": 2, "share_percent": 1}, headers=tenant_a.headers()
    )
    assert started.status_code == 200, started.text
    assert started.json()["share_percent"] == 1.0
    assert started.json()["sticky"] == "record"
    for share in ("5", "50"):
        changed = await client.put(
            ROLLOUT,
            json={"candidate_version": 2, "share_percent": share},
            headers=tenant_a.headers(),
        )
        assert changed.json()["id"] == started.json()["id"]  # the same split, widened
    rolled_back = await client.post(f"{ROLLOUT}/rollback", headers=tenant_a.headers())
    assert rolled_back.json()["share_percent"] == 0.0

    detail = (await client.get(f"/v1/prompts/{PROMPT}", headers=tenant_a.headers())).json()
    assert detail["rollout"]["candidate_version"] == 2
    assert [
        (h["action"], h["share_percent_before"], h["share_percent_after"])
        for h in detail["history"]
    ] == [
        ("start", None, 1.0),
        ("change", 1.0, 5.0),
        ("change", 5.0, 50.0),
        ("rollback", 50.0, 0.0),
    ]
    assert {h["actor"] for h in detail["history"]} == {f"key:{tenant_a.key_ids[Role.ADMIN]}"}

    ended = await client.delete(ROLLOUT, headers=tenant_a.headers())
    assert ended.status_code == 204
    assert_problem(
        await client.delete(ROLLOUT, headers=tenant_a.headers()), 404, "rollout-not-found"
    )
    async with services.sessions() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.object_type == "prompt_rollout")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert list(actions) == [
        "prompt_rollout.start",
        "prompt_rollout.change",
        "prompt_rollout.change",
        "prompt_rollout.rollback",
        "prompt_rollout.end",
    ]


async def test_only_admins_change_rollouts(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    body = {"candidate_version": 2, "share_percent": 5}
    for role in (Role.SERVICE, Role.REVIEWER):
        assert_problem(
            await client.put(ROLLOUT, json=body, headers=tenant_a.headers(role)), 403, "forbidden"
        )
        assert_problem(
            await client.post(f"{ROLLOUT}/rollback", headers=tenant_a.headers(role)),
            403,
            "forbidden",
        )


async def test_bad_rollouts_are_refused_with_the_fix(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    async def put(body: object, prompt: str = PROMPT) -> httpx.Response:
        return await client.put(
            f"/v1/prompts/{prompt}/rollout", json=body, headers=tenant_a.headers()
        )

    missing = await put({"candidate_version": 9, "share_percent": 5})
    assert_problem(missing, 422, "rollout-invalid")
    assert "installed versions: 1, 2, 3" in missing.json()["detail"]
    unfillable = await put({"candidate_version": 3, "share_percent": 5})
    assert_problem(unfillable, 422, "rollout-invalid")
    assert "lacks priority" in unfillable.json()["detail"]
    same = await put({"candidate_version": 1, "share_percent": 5})
    assert_problem(same, 422, "rollout-invalid")
    finer = await put({"candidate_version": 2, "share_percent": "0.005"})
    assert_problem(finer, 422, "rollout-invalid")
    assert "0.01% steps" in finer.json()["detail"]
    over = await put({"candidate_version": 2, "share_percent": 101})
    assert_problem(over, 422, "invalid-request")
    extra = await put({"candidate_version": 2, "share_percent": 5, "weight": 1})
    assert_problem(extra, 422, "invalid-request")
    unknown = await put({"candidate_version": 2, "share_percent": 5}, prompt="nope")
    assert_problem(unknown, 404, "prompt-not-found")
    assert_problem(
        await client.get("/v1/prompts/nope", headers=tenant_a.headers()), 404, "prompt-not-found"
    )
    assert_problem(
        await client.post(f"{ROLLOUT}/rollback", headers=tenant_a.headers()),
        404,
        "rollout-not-found",
    )


async def test_usage_compares_versions_even_without_calls(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    await client.put(
        ROLLOUT, json={"candidate_version": 2, "share_percent": 5}, headers=tenant_a.headers()
    )
    response = await client.get(
        f"/v1/usage/prompts/{PROMPT}", headers=tenant_a.headers(Role.REVIEWER)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == []
    assert body["rollout"]["share_percent"] == 5.0
    grouped = await client.get(
        "/v1/usage", params={"group_by": "prompt"}, headers=tenant_a.headers()
    )
    assert grouped.status_code == 200
    assert grouped.json()["totals"]["validation_failures"] == 0
    naive = await client.get(
        f"/v1/usage/prompts/{PROMPT}",
        params={"since": "2026-01-01T00:00:00"},
        headers=tenant_a.headers(),
    )
    assert_problem(naive, 422, "invalid-request")
