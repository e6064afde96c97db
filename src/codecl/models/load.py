"""Load the base model and tokenizer: the `tiny` preset, a local folder, or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from codecl.errors import UserError


@dataclass
class BaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    provenance: dict = field(default_factory=dict)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_pretrained(name_or_path: str | Path) -> BaseModel:
    """A Hugging Face seq2seq model (T5 family) by hub id or local folder.

    A hub id needs the hub (or a filled local HF cache); offline it fails with one line saying so.
    """
    source = str(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSeq2SeqLM.from_pretrained(source)
    except (OSError, ValueError) as error:
        where = "local folder" if Path(source).exists() else "hub id (is the hub reachable?)"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"model {source}: cannot load as a {where}: {first_line}") from None
    if not model.config.is_encoder_decoder:
        raise UserError(f"model {source}: expected an encoder-decoder (T5-family) model, got {model.config.model_type}")
    model.eval()
    provenance = {"name": source, "model_type": model.config.model_type}
    recipe = Path(source) / "codecl_base.json"
    if recipe.is_file():
        provenance["made_by_codecl"] = json.loads(recipe.read_text())
    return BaseModel(model, tokenizer, provenance)
