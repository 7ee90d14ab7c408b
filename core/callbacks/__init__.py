"""Signed callbacks: tell a tenant's subscribers when its jobs finish.

The path, and why it is shaped so:

1. :func:`on_job_finished` is a :class:`~core.queue.JobQueue` finish listener. It runs in
   the transaction that marks a job done, dead or awaiting review, and there inserts one
   ``Delivery`` per matching subscription plus one ``callback.deliver`` job each (outbox):
   a callback exists if and only if the status change committed.
2. The ``callback.deliver`` handler (:func:`deliver_job_kind`) re-checks the destination
   with :mod:`core.netguard` (DNS can change), signs the exact body bytes it sends
   (``Switchyard-Signature``, see :mod:`core.signing`) and POSTs them. No transaction is
   held while the request is in flight, since SQLite has a single writer.
3. 2xx marks the delivery ``delivered``. 408, 425, 429, 5xx and network errors raise a
   transient error (honouring ``Retry-After``) so the queue retries with backoff; any other
   answer, or a refused destination, is terminal. When the decision is final the handler
   marks the delivery ``dead``; a delivery job that dies because its worker vanished is
   buried by the listener instead. :func:`replay_delivery` sends a dead one again.

Events that are not about a job (a budget's soft threshold) go through :func:`notify` the
same way, in the transaction that records them.
"""

from core.callbacks.listener import job_snapshot, make_finish_listener, notify, on_job_finished
from core.callbacks.sender import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    DeliveryFailed,
    DeliveryRejected,
    deliver_job_kind,
    encode_body,
)
from core.callbacks.store import (
    DELIVER_KIND,
    DELIVERY_RETRY,
    EVENT_FOR_STATUS,
    MAX_ACTIVE_SUBSCRIPTIONS,
    DeliveryStatus,
    EventType,
    create_subscription,
    deactivate_subscription,
    get_delivery,
    get_subscription,
    list_deliveries,
    list_subscriptions,
    open_secret,
    replay_delivery,
    rotate_subscription_secrets,
)

__all__ = [
    "DELIVERY_HEADER",
    "DELIVERY_RETRY",
    "DELIVER_KIND",
    "EVENT_FOR_STATUS",
    "EVENT_HEADER",
    "MAX_ACTIVE_SUBSCRIPTIONS",
    "DeliveryFailed",
    "DeliveryRejected",
    "DeliveryStatus",
    "EventType",
    "create_subscription",
    "deactivate_subscription",
    "deliver_job_kind",
    "encode_body",
    "get_delivery",
    "get_subscription",
    "job_snapshot",
    "list_deliveries",
    "list_subscriptions",
    "make_finish_listener",
    "notify",
    "on_job_finished",
    "open_secret",
    "replay_delivery",
    "rotate_subscription_secrets",
]
