"""Signed callbacks end to end against a real HTTP receiver on 127.0.0.1.

The receiver is a plain ``http.server`` in a thread, and its signature check is written
from ``hmac``/``hashlib`` alone (``tests/core/callback_support.py``), so a bug in
``core.signing`` cannot hide itself.
The queue path is the real one: ``JobQueue`` claim → handler → complete/fail, as a worker
runs it, with ``on_job_finished`` as the finish listener.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select, update

from connectors.registry import ConnectorRegistry
from core import callbacks
from core.auth import create_tenant
from core.callbacks import DELIVER_KIND, DeliveryStatus, deliver_job_kind, on_job_finished
from core.crypto import DecryptionFailed, generate_key
from core.db.models import Job, JobStatus, Subscription
from core.db.types import utcnow
from core.errors import Conflict, DestinationRefused, NotFound
from core.flows.catalog import FlowCatalog
from core.handlers import JobContext
from core.queue import NewJob, enqueue
from core.services import Services, build_services
from core.settings import Settings
from tests.conftest import make_settings
from tests.core.callback_support import (
    Received,
    Receiver,
    callback_count,
    deliver_jobs,
    deliveries,
    finish_job,
    keep_alive_server,
    make_queue,
    run_delivery,
    subscribe,
    verify_independently,
)

# ------------------------------------------------------------------ fixtures


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
async def tenant_id(services: Services) -> str:
    async with services.sessions.begin() as session:
        return (await create_tenant(session, "acme")).id


@pytest.fixture
async def strict_services(settings: Settings) -> AsyncIterator[Services]:
    """Same database, but no private network allowed (the production default)."""
    built = build_services(
        make_settings(settings.database_url, callback_allow_networks=[]),
        registry=ConnectorRegistry([]),
        flows=FlowCatalog(),
    )
    yield built
    await built.aclose()


def _resolve_as(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Answer these names from a table; every other lookup goes to the real resolver."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return await real(host, port, *args, **kwargs)
        infos: list[Any] = []
        for address in answers[host]:
            if ipaddress.ip_address(address).version == 6:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _tls_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a certificate it issued for ``name`` only: (server, client)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchyard test CA")])

    def issue(
        subject: x509.Name, public: ec.EllipticCurvePublicKey, *, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_key_usage(ca=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256())

    ca_cert = issue(ca_name, ca_key.public_key(), ca=True)
    leaf = issue(x509.Name([]), key.public_key(), ca=False)
    chain, key_file = directory / "server.pem", directory / "server.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, key_file)
    client = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server, client


# --------------------------------------------------------------------- tests


async def test_a_finished_job_is_delivered_signed_to_its_subscriber(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    subscription, secret = await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    job_id = await finish_job(services, queue, tenant_id)

    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.job_id, delivery.event_type) == (
        "pending",
        job_id,
        "job.done",
    )
    [deliver_job] = await deliver_jobs(services)
    assert deliver_job.payload == {"delivery_id": delivery.id}
    assert deliver_job.tenant_id == tenant_id

    assert await run_delivery(services, queue) is JobStatus.DONE
    [received] = receiver.received
    body = verify_independently(secret, received)
    assert received.path == "/hooks/switchyard"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["switchyard-delivery"] == str(delivery.id)
    assert received.headers["switchyard-event"] == "job.done"
    assert received.headers["host"] == receiver.url.split("/")[2]
    assert body["id"] == delivery.id
    assert body["type"] == "job.done"
    assert body["delivered_for"] == {"tenant_id": tenant_id, "subscription_id": subscription.id}
    job = body["job"]
    assert (job["id"], job["kind"], job["status"], job["flow"]) == (job_id, "flow.run", "done", "f")
    assert (job["result"], job["attempts"], job["last_error"]) == ({"answer": 42}, 1, None)
    assert job["finished_at"]
    assert job["trace_id"]

    [delivery] = await deliveries(services)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)
    assert delivery.delivered_at is not None
    assert callback_count(services, "delivered") == 1


async def test_the_independent_verifier_rejects_a_wrong_secret_and_a_changed_body(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    await run_delivery(services, queue)
    [received] = receiver.received
    with pytest.raises(AssertionError, match="bad signature"):
        verify_independently("sysec_not-the-secret", received)
    tampered = Received(received.path, received.headers, received.body + b" ", received.at)
    with pytest.raises(AssertionError, match="bad signature"):
        verify_independently("irrelevant", tampered)


async def test_listener_writes_deliveries_in_the_transaction_that_finishes_the_job(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)

    async def broken(session: object, job: Job) -> None:
        raise RuntimeError("listener after on_job_finished fails")

    queue = make_queue(services, on_job_finished, broken)
    async with services.sessions.begin() as session:
        [job_id] = await enqueue(session, [NewJob(kind="flow.run", tenant_id=tenant_id)])
    [claimed] = await queue.claim(["flow.run"], 1)
    with pytest.raises(RuntimeError):
        await queue.complete(claimed, {})
    # Rolled back together: the job is still running and no delivery or job was created.
    assert await deliveries(services) == []
    assert await deliver_jobs(services) == []
    async with services.sessions() as session:
        assert (await session.get(Job, job_id)).status == JobStatus.RUNNING  # type: ignore[union-attr]


async def test_each_event_type_reaches_only_the_subscriptions_that_listen_to_it(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    done_only, _ = await subscribe(services, tenant_id, receiver.url, ["job.done"])
    review, _ = await subscribe(services, tenant_id, receiver.url, ["job.awaiting_review"])
    dead, _ = await subscribe(services, tenant_id, receiver.url, ["job.dead", "job.done"])
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id, status=JobStatus.AWAITING_REVIEW)
    await finish_job(services, queue, tenant_id, status=JobStatus.DEAD)
    await finish_job(services, queue, tenant_id, status=JobStatus.DONE)
    got = {(d.subscription_id, d.event_type) for d in await deliveries(services)}
    assert got == {
        (review.id, "job.awaiting_review"),
        (dead.id, "job.dead"),
        (done_only.id, "job.done"),
        (dead.id, "job.done"),
    }
    dead_payload = next(d.payload for d in await deliveries(services) if d.event_type == "job.dead")
    assert dead_payload["job"]["status"] == "dead"
    assert "nope" in dead_payload["job"]["last_error"]


async def test_no_callback_for_inactive_subscriptions_other_tenants_or_tenantless_jobs(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    subscription, _ = await subscribe(services, tenant_id, receiver.url)
    async with services.sessions.begin() as session:
        other = (await create_tenant(session, "other")).id
    queue = make_queue(services)
    await finish_job(services, queue, other)
    await finish_job(services, queue, None)
    async with services.sessions.begin() as session:
        await callbacks.deactivate_subscription(session, subscription.id, tenant_id)
    await finish_job(services, queue, tenant_id)
    assert await deliveries(services) == []


async def test_delivery_jobs_and_silent_kinds_never_notify(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services, callbacks.make_finish_listener(["connection.poll"]))
    await finish_job(services, queue, tenant_id, kind="connection.poll")
    assert await deliveries(services) == []
    await finish_job(services, queue, tenant_id)
    # Even when a worker notifies about a finished delivery job, it creates no callback.
    kind = deliver_job_kind()
    [job] = await queue.claim([DELIVER_KIND], 1)
    outcome = await kind.handler(JobContext(job=job, services=services))
    assert outcome is not None
    assert await queue.complete(job, outcome.result, notify=True)
    assert len(await deliveries(services)) == 1
    assert kind.notify is False


async def test_503_then_200_is_retried_with_backoff_honouring_retry_after(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    _, secret = await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    receiver.answer(503, headers={"Retry-After": "120"})
    before = utcnow()
    assert await run_delivery(services, queue) is JobStatus.QUEUED
    [job] = await deliver_jobs(services)
    assert job.run_at >= before + timedelta(seconds=120)
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    assert "HTTP 503" in (delivery.last_error or "")
    assert callback_count(services, "retry") == 1

    assert await run_delivery(services, queue) is JobStatus.DONE
    first, second = receiver.received
    # Each attempt is signed afresh, over the same body.
    assert first.body == second.body
    verify_independently(secret, second)
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert delivery.last_error is None


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_other_retryable_answers_are_transient(
    services: Services, tenant_id: str, receiver: Receiver, status: int
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    receiver.answer(status)
    assert await run_delivery(services, queue) is JobStatus.QUEUED


async def test_a_receiver_that_keeps_failing_is_dead_lettered_then_replayed(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    _, secret = await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    limit = callbacks.DELIVERY_RETRY.max_attempts
    receiver.answer(503, times=limit)
    statuses = [await run_delivery(services, queue) for _ in range(limit)]
    assert statuses == [JobStatus.QUEUED] * (limit - 1) + [JobStatus.DEAD]
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("dead", limit, 503)
    [job] = await deliver_jobs(services)
    assert job.status == JobStatus.DEAD
    assert callback_count(services, "dead") == 1
    # A dead delivery job does not itself become a callback.
    assert len(await deliveries(services)) == 1

    async with services.sessions.begin() as session:
        replayed = await callbacks.replay_delivery(session, delivery.id, tenant_id)
        assert replayed.status == DeliveryStatus.PENDING
    async with services.sessions.begin() as session:
        with pytest.raises(Conflict):  # pending now: not replayable twice
            await callbacks.replay_delivery(session, delivery.id, tenant_id)
    assert await run_delivery(services, queue) is JobStatus.DONE
    verify_independently(secret, receiver.received[-1])
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts) == ("delivered", limit + 1)
    assert len(receiver.received) == limit + 1


async def test_a_4xx_answer_is_terminal_at_once(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    receiver.answer(410)
    assert await run_delivery(services, queue) is JobStatus.DEAD
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("dead", 1, 410)
    assert "receiver says no" in (delivery.last_error or "")


async def test_a_redirect_is_not_followed(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    receiver.answer(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    assert await run_delivery(services, queue) is JobStatus.DEAD
    assert len(receiver.received) == 1
    [delivery] = await deliveries(services)
    assert "redirects are not followed" in (delivery.last_error or "")


async def test_connection_refused_is_retried(services: Services, tenant_id: str) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await subscribe(services, tenant_id, f"http://127.0.0.1:{port}/")
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    assert await run_delivery(services, queue) is JobStatus.QUEUED
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert "ConnectError" in (delivery.last_error or "")


async def test_the_destination_is_checked_again_before_each_attempt(
    services: Services, strict_services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    await finish_job(services, make_queue(services), tenant_id)
    # Loopback was allowed at creation; a worker configured without it must refuse to send.
    assert await run_delivery(strict_services, make_queue(strict_services)) is JobStatus.DEAD
    assert receiver.received == []
    [delivery] = await deliveries(services)
    assert delivery.status == "dead"
    assert "loopback" in (delivery.last_error or "")


async def test_lease_recovery_burying_a_delivery_job_marks_the_delivery_dead(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    [job] = await queue.claim([DELIVER_KIND], 1)
    async with services.sessions.begin() as session:  # its worker died on the last attempt
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(attempts=Job.max_attempts, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await queue.recover_expired() == 1
    [delivery] = await deliveries(services)
    assert delivery.status == "dead"
    assert "lease expired" in (delivery.last_error or "")
    assert len(await deliveries(services)) == 1


async def test_subscription_urls_on_private_networks_are_refused_unless_allowed(
    services: Services, strict_services: Services, tenant_id: str
) -> None:
    for url in [
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://localhost/",
    ]:
        with pytest.raises(DestinationRefused):
            await subscribe(strict_services, tenant_id, url)
    subscription, _ = await subscribe(services, tenant_id, "http://127.0.0.1:8080/")
    assert subscription.active
    async with services.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(Subscription))
    assert count == 1


async def test_the_secret_is_stored_encrypted_and_bound_to_its_row(
    services: Services, tenant_id: str
) -> None:
    subscription, secret = await subscribe(services, tenant_id, "http://127.0.0.1:9/")
    other, _ = await subscribe(services, tenant_id, "http://127.0.0.1:9/")
    assert secret.startswith("sysec_")
    assert len(secret) > 40
    async with services.sessions() as session:
        row = await session.get(Subscription, subscription.id)
        assert row is not None
        assert secret not in row.secret_encrypted
        assert callbacks.open_secret(services, row) == secret
        # Moved to another row, the ciphertext no longer decrypts.
        other_row = await session.get(Subscription, other.id)
        assert other_row is not None
        other_row.secret_encrypted = row.secret_encrypted
        with pytest.raises(DecryptionFailed):
            callbacks.open_secret(services, other_row)


async def test_replay_and_lookups_are_tenant_scoped(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    subscription, _ = await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    receiver.answer(400)
    assert await run_delivery(services, queue) is JobStatus.DEAD
    [delivery] = await deliveries(services)
    async with services.sessions.begin() as session:
        other = (await create_tenant(session, "other")).id
    async with services.sessions.begin() as session:
        with pytest.raises(NotFound):
            await callbacks.replay_delivery(session, delivery.id, other)
        with pytest.raises(NotFound):
            await callbacks.list_deliveries(session, subscription.id, other)
        with pytest.raises(NotFound):
            await callbacks.deactivate_subscription(session, subscription.id, other)
        assert await callbacks.list_subscriptions(session, other) == []
        await callbacks.deactivate_subscription(session, subscription.id, tenant_id)
    async with services.sessions.begin() as session:
        with pytest.raises(Conflict, match="inactive"):
            await callbacks.replay_delivery(session, delivery.id, tenant_id)


async def test_a_subscription_deactivated_before_sending_kills_its_pending_delivery(
    services: Services, tenant_id: str, receiver: Receiver
) -> None:
    subscription, _ = await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    async with services.sessions.begin() as session:
        await callbacks.deactivate_subscription(session, subscription.id, tenant_id)
    assert await run_delivery(services, queue) is JobStatus.DEAD
    assert receiver.received == []
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts) == ("dead", 1)
    assert "inactive" in (delivery.last_error or "")


async def test_a_secret_that_cannot_be_decrypted_kills_the_delivery_visibly(
    services: Services, settings: Settings, tenant_id: str, receiver: Receiver
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    await finish_job(services, make_queue(services), tenant_id)
    rekeyed = build_services(
        make_settings(settings.database_url, encryption_keys=[f"other:{generate_key()}"]),
        registry=ConnectorRegistry([]),
        flows=FlowCatalog(),
    )
    try:
        assert await run_delivery(rekeyed, make_queue(rekeyed)) is JobStatus.DEAD
    finally:
        await rekeyed.aclose()
    assert receiver.received == []
    [delivery] = await deliveries(services)
    assert delivery.status == "dead"
    assert "'test'" in (delivery.last_error or "")  # names the missing key id


async def test_an_unforeseen_error_is_recorded_on_the_delivery_and_retried(
    services: Services, tenant_id: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await subscribe(services, tenant_id, receiver.url)
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)

    async def broken_send(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the HTTP stack")

    monkeypatch.setattr(services.http, "send", broken_send)
    assert await run_delivery(services, queue) is JobStatus.QUEUED
    [delivery] = await deliveries(services)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "a bug in the HTTP stack" in (delivery.last_error or "")
    assert callback_count(services, "retry") == 1


async def test_a_connection_that_fails_falls_back_to_the_next_vetted_address(
    settings: Settings, tenant_id: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name resolves to ::1 first, where nothing listens on the receiver's port (or
    # which has no IPv6 at all); either way no connection is made and 127.0.0.1 is next.
    dual = build_services(
        make_settings(settings.database_url, callback_allow_networks=["127.0.0.0/8", "::1/128"]),
        registry=ConnectorRegistry([]),
        flows=FlowCatalog(),
    )
    try:
        _resolve_as(monkeypatch, {"dual.example": ["::1", "127.0.0.1"]})
        port = receiver.url.split("/")[2].rsplit(":", 1)[1]
        _, secret = await subscribe(dual, tenant_id, f"http://dual.example:{port}/in")
        queue = make_queue(dual)
        await finish_job(dual, queue, tenant_id)
        assert await run_delivery(dual, queue) is JobStatus.DONE
        [delivery] = await deliveries(dual)
    finally:
        await dual.aclose()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    [received] = receiver.received
    verify_independently(secret, received)
    assert received.headers["host"] == f"dual.example:{port}"


async def test_only_a_failure_to_connect_moves_on_to_the_next_address(
    services: Services, tenant_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_as(monkeypatch, {"two.example": ["127.0.0.2", "127.0.0.3"]})
    await subscribe(services, tenant_id, "http://two.example/in")
    queue = make_queue(services)
    await finish_job(services, queue, tenant_id)
    tried: list[str] = []
    failure: type[httpx.TransportError] = httpx.ConnectError

    async def send(request: httpx.Request, **_: object) -> httpx.Response:
        tried.append(request.url.host)
        raise failure("no route", request=request)

    monkeypatch.setattr(services.http, "send", send)
    assert await run_delivery(services, queue) is JobStatus.QUEUED
    assert tried == ["127.0.0.2", "127.0.0.3"]  # every vetted address, in order
    [delivery] = await deliveries(services)
    assert "ConnectError: no route" in (delivery.last_error or "")

    # Once a request may have been sent, trying another address could deliver it twice.
    tried.clear()
    failure = httpx.ReadError
    assert await run_delivery(services, queue) is JobStatus.QUEUED
    assert tried == ["127.0.0.2"]


async def test_a_connection_verified_for_one_name_is_never_reused_for_another(
    services: Services,
    tenant_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two names at one IP: the pool is keyed by IP and port, so without care the second
    name's callback would ride the first name's TLS connection, whose certificate
    (issued for a.example only) was never checked against b.example."""
    server_tls, client_tls = _tls_for("a.example", tmp_path)
    _resolve_as(monkeypatch, {"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]})
    await services.http.aclose()
    services.http = httpx.AsyncClient(verify=client_tls, follow_redirects=False)
    queue = make_queue(services)
    async with keep_alive_server(server_tls) as (port, connections):
        first, _ = await subscribe(services, tenant_id, f"https://a.example:{port}/in")
        await finish_job(services, queue, tenant_id)
        assert await run_delivery(services, queue) is JobStatus.DONE

        async with services.sessions.begin() as session:
            await callbacks.deactivate_subscription(session, first.id, tenant_id)
        await subscribe(services, tenant_id, f"https://b.example:{port}/in")
        await finish_job(services, queue, tenant_id)
        assert await run_delivery(services, queue) is JobStatus.QUEUED
        await services.http.aclose()
    b_delivery = (await deliveries(services))[-1]
    assert "certificate verify failed" in (b_delivery.last_error or "").lower()
    assert "b.example" in (b_delivery.last_error or "")
    assert connections == [[f"a.example:{port}"]]
