"""A request's prompt as the model sees it: chat messages rendered with the model's template,
text encoded, or token ids checked against the vocabulary."""

from __future__ import annotations

from typing import Any

from inference_service.errors import InvalidRequest
from inference_service.types import GenerationRequest


def tokenize_prompt(tokenizer: Any, req: GenerationRequest) -> tuple[list[int], str]:
    """Token ids and text of the prompt, tokenized here exactly as vLLM would."""
    if req.chat is not None:
        if not req.chat:
            raise InvalidRequest("messages must not be empty")
        messages = [{"role": role, "content": content} for role, content in req.chat]
        try:
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # the template rejects e.g. unknown role orders
            raise InvalidRequest(f"cannot apply the chat template: {exc}") from exc
        # The template already holds the special tokens it needs.
        return list(tokenizer.encode(text, add_special_tokens=False)), text
    if req.prompt is not None:
        if not req.prompt:
            raise InvalidRequest("prompt must not be empty")
        return list(tokenizer.encode(req.prompt)), req.prompt
    ids = list(req.prompt_token_ids or ())
    if not ids:
        raise InvalidRequest("prompt_token_ids must not be empty")
    vocab = len(tokenizer)
    if any(i >= vocab for i in ids):
        raise InvalidRequest(f"prompt token ids must be below the vocabulary size {vocab}")
    return ids, tokenizer.decode(ids)
