"""One router module per resource; each exposes ``router`` and states its role policy.

* ``health``   — ``/healthz``, ``/readyz``: no key (probes reveal no tenant data).
* ``metrics``  — ``/metrics``: no key (aggregate counters only).
* ``hooks``    — ``/hooks/{connection_id}``: no key; the platform's signature authenticates.
* ``jobs``     — read: any role; replay: admin or service; cancel: admin.
* ``connections`` — read: any role; create and flow switches: admin.
* ``flows``    — read: any role; dry run: admin.
* ``budgets``  — read: any role; create, change, delete: admin.
* ``subscriptions`` — admin only.
* ``call_audit`` — admin only: ``POST /v1/calls/{id}/audit`` with a reason; every read
  is itself audited.

Roles in one line: admin does everything, service reads and replays jobs, reviewer reads.
Another tenant's object answers 404, never 403 (a 403 would confirm that it exists).
"""
