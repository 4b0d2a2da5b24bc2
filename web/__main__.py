"""``python -m web`` runs the ``handoff`` CLI (used where the console script is not on PATH)."""

from web.cli import main

main()
