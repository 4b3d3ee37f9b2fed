"""The frozen LLM fed a piece at a time over its KV cache: what listening streams speech embeddings and answer
tokens through."""

from __future__ import annotations

from typing import Any

import torch


class CachedLM:
    """The frozen LLM fed incrementally: each call appends `inputs_embeds` after what its KV cache holds and returns
    their last hidden states, equal to one pass over the whole sequence."""

    def __init__(self, lm: Any) -> None:
        self.lm, self.cache, self.length = lm, None, 0
        self.dtype = lm.get_input_embeddings().weight.dtype

    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        """(1, n, hidden) -> (1, n, hidden) last hidden states (after the final norm)."""
        mask = torch.ones(1, self.length + embeds.shape[1], dtype=torch.long, device=embeds.device)
        out = self.lm.base_model(
            inputs_embeds=embeds.to(self.dtype), attention_mask=mask, cache=self.cache, use_cache=True
        )
        self.cache, self.length = out.cache, self.length + embeds.shape[1]
        return out.last_hidden_state
