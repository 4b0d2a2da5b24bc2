"""The Slack bot: slash commands, mentions, DMs and buttons become tasks; each task lives in a thread.

``integration`` builds it for the composition root; ``app`` (bolt listeners) → ``intake`` (Slack
requests → core mentions, with ``access``: the allow-list) → core; ``reporter`` (events → outbox
rows) → ``notifier`` (outbox rows → Web API calls, rendered by ``messages``/``blocks`` from
``view``); ``store`` keeps deliveries, thread and binding references; ``socket`` and ``doctor``
serve ``handoff up`` and ``handoff doctor``.
"""
