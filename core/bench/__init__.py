"""Benchmarks of the Claude gateway, run from ``switchyard bench``.

* :mod:`.savings`: a CRM workload (:mod:`.workload`, ``workload.yaml``) replayed naively
  (the SDK straight to the API, one big model) and through Switchyard, against the same
  sandbox configuration: cost, latency and rate-limit errors side by side.
* :mod:`.overhead`: the latency ``switchyard serve`` adds over a direct call, its maximum
  requests/s and its memory over many requests.

Both run every server in its own process (:mod:`.processes`; the sandbox through
:mod:`.sandbox_server`) and are laid out by :mod:`.cli`. Importing this package starts
nothing and imports nothing heavy.
"""
