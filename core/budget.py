"""Per-task budgets: what a run may spend (time, tokens, cost, model calls).

Set in the server's ``handoff.yml``, narrowed per task (API, a repository's ``.handoff.yml``, an
automation rule) and enforced live by the worker.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Budget(BaseModel):
    """Per-task budgets; ``None`` means no limit. A task's own budget may only tighten them."""

    # Bounded above (and no NaN or infinity): a budget arrives from outside and is stored as JSON.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    wall_clock_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    max_tokens: int | None = Field(default=None, gt=0, le=10**12)
    max_cost_usd: float | None = Field(default=None, gt=0, le=1_000_000)
    max_steps: int | None = Field(
        default=None, gt=0, le=1_000_000, description="model calls (built-in agent)"
    )
    max_input_tokens: int | None = Field(default=None, gt=0, le=10**12)
    max_output_tokens: int | None = Field(default=None, gt=0, le=10**12)

    def tightened(self, task_budget: dict[str, Any]) -> Budget:
        """This budget narrowed by a task's own values (never widened)."""
        merged = self.model_dump()
        for key, value in task_budget.items():
            if key in merged and value is not None:
                merged[key] = value if merged[key] is None else min(merged[key], value)
        return Budget.model_validate(merged)
