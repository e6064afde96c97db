"""What `ewc` and `replay` train: every weight (full fine-tuning) or one LoRA adapter shared by the stream.

Both methods hold such an inner method and delegate to it everything but their own addition (a loss
term, remembered examples): composition, so either works on either base.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from codecl.methods.base import MethodConfig
from codecl.methods.full_ft import FullFineTuning, FullFineTuningConfig
from codecl.methods.lora import Lora, LoraMethodConfig


class OnBaseConfig(MethodConfig):
    """What a regularising or replaying method trains: every weight, or one LoRA adapter for the stream."""

    base: Literal["full", "lora"] = Field(
        "full", description="train every weight (full) or one LoRA adapter shared by the stream (lora)"
    )
    r: int = Field(8, ge=1, description="adapter rank (base lora)")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: updates are scaled by alpha / r (base lora)")
    target_modules: list[str] = Field(
        ["q", "v"], min_length=1, description="linear layers that get adapters, T5: q k v o wi wo (base lora)"
    )


def build_base(config: OnBaseConfig) -> FullFineTuning | Lora:
    """The inner method that owns the weights; the outer one only adds a loss term or examples."""
    if config.base == "full":
        return FullFineTuning(FullFineTuningConfig(method="full-ft"))
    return Lora(LoraMethodConfig(
        method="lora", per_task=False, r=config.r, alpha=config.alpha, target_modules=config.target_modules
    ))
