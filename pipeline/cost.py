"""What tokens cost: a price table per model (USD per million tokens) and the arithmetic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schema import Usage

BATCH_DISCOUNT = 0.5  # the Batch API bills half price


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0, description="Defaults to the input price.")
    output: float = Field(ge=0)


def cost_usd(usage: Usage, price: Price, *, batch: bool = False) -> float:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    total = (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + usage.completion_tokens * price.output
    ) / 1_000_000
    return round(total * (BATCH_DISCOUNT if batch else 1.0), 6)
