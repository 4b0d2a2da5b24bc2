"""Automation rules: agents started by GitHub events and schedules instead of a typed command.

``rules`` (the rule model, its validation and a repository's bounds), ``cron`` (schedules),
``facts`` (an event normalised for matching, and the matching itself), ``template`` (instructions
and dedupe keys with event fields, the untrusted ones fenced), ``ledger`` (firings and skips, rate
limits, the pause switch) and ``commands`` (``pause`` / ``resume``). Pure domain: the GitHub side
(payloads, API calls, firing tasks) lives in ``github_app.automations``.
"""
