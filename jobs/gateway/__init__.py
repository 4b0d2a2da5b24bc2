"""No secret in any sandbox: each run's model gateway and egress proxy, reached over Unix sockets.

* :mod:`jobs.gateway.model` — the model gateway: token check, model allow-list, key injection,
  metering (:mod:`jobs.gateway.meter`) and the budget stop.
* :mod:`jobs.gateway.egress` — the egress proxy, deciding by :mod:`jobs.gateway.policy`.
* :mod:`jobs.gateway.forwarder` — the static in-container relay (``forward.c``) from loopback
  ports to the sockets, so a container whose network is ``none`` still reaches both.
* :mod:`jobs.gateway.session` — :class:`~jobs.gateway.session.RunGateway`, which sets all of it up
  for one run and tears it down with the run.
"""
