"""Conversations -> token ids and a per-token target mask.

A conversation (the `messages` or ShareGPT `conversations` schema) is rendered once, whole, and
the loss covers the assistant turns (`data.train_on`: all of them or the last one) and nothing
else. The mask comes from the chat template itself:
- a template with `{% generation %}` markers gives it through transformers'
  `return_assistant_tokens_mask`;
- any other template is rendered on growing prefixes of the conversation: the text an assistant
  turn adds (its reply and the end-of-turn the template writes) is a target span, and every prefix
  must be a prefix of the whole (a template that rewrites earlier turns is an error);
- without a chat template, a plain role format (`PLAIN_ROLES`): "User: ...\\n\\nAssistant: <reply><eos>".
"""

from __future__ import annotations

import re

from ift.errors import UserError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
}
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def conversation(turns, sharegpt: bool) -> tuple[list[dict], str]:
    """Canonical turns [{role, content}] up to the last assistant turn, and '' or why the record is bad.
    Turns after the last assistant turn carry no target and are left out."""
    if not isinstance(turns, list):
        return [], f"{'conversations' if sharegpt else 'messages'} is not a list"
    field, role_key, content_key = ("conversations", "from", "value") if sharegpt else ("messages", "role", "content")
    out = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return [], f"{field}[{j}] is not an object"
        role = turn.get(role_key)
        role = SHAREGPT_ROLES.get(role) if sharegpt and isinstance(role, str) else role
        if role not in ROLES:
            return [], f"{field}[{j}].{role_key} is {turn.get(role_key)!r}, expected one of " + (
                ", ".join(sorted(SHAREGPT_ROLES)) if sharegpt else ", ".join(ROLES)
            )
        if not isinstance(turn.get(content_key), str):
            return [], f"{field}[{j}].{content_key} is not text"
        out.append({"role": role, "content": turn[content_key]})
    last = max((j for j, t in enumerate(out) if t["role"] == "assistant"), default=None)
    if last is None:
        return [], f"{field}: no assistant turn"
    return out[: last + 1], ""


def has_generation_markers(tokenizer) -> bool:
    return bool(_GENERATION_TAG.search(getattr(tokenizer, "chat_template", None) or ""))


def _keep_last_span(mask: list[int]) -> list[int]:
    """Only the last run of target tokens: the last assistant turn."""
    end = max((i for i, m in enumerate(mask) if m), default=-1) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return [1 if start <= i < end else 0 for i in range(len(mask))]


def _template_spans(tokenizer, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation's text and the character spans the assistant turns add."""

    def render(msgs, generation_prompt):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    full = render(messages, False)
    spans = []
    for k, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before, upto = render(messages[:k], True), render(messages[: k + 1], False)
        for prefix in (before, upto):
            if not full.startswith(prefix):
                raise UserError(
                    f"{where}: the chat template renders turn {k} differently once later turns follow "
                    "(it rewrites earlier turns), so the assistant tokens cannot be found; use a template "
                    "with {% generation %} markers or data.chat_template=none"
                )
        if len(upto) <= len(before):
            raise UserError(f"{where}: the chat template writes nothing for assistant turn {k}")
        spans.append((len(before), len(upto)))
    return full, spans


def tokenize_conversation(
    tokenizer, messages: list[dict], *, chat: bool, train_on: str, where: str
) -> tuple[list[int], list[int]]:
    """(token ids, target mask) of a whole conversation ending with an assistant turn."""
    if chat and has_generation_markers(tokenizer):
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(enc["input_ids"]), [int(m) for m in enc["assistant_masks"]]
        if not any(mask):
            raise UserError(f"{where}: the chat template's {{% generation %}} markers cover no token")
    elif chat:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"{where}: masking assistant turns by prefix rendering needs a fast tokenizer (offsets)")
        full, spans = _template_spans(tokenizer, messages, where)
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [int(any(s <= start < e for s, e in spans)) for start, _ in enc["offset_mapping"]]
    else:
        ids, mask = [], []
        text = ""  # prompt text waiting for the next reply
        for turn in messages:
            if turn["role"] != "assistant":
                text += ("\n\n" if text or ids else "") + f"{PLAIN_ROLES[turn['role']]}: {turn['content'].strip()}"
                continue
            text += ("\n\n" if text or ids else "") + "Assistant:"
            prompt = tokenizer(text, add_special_tokens=not ids)["input_ids"]
            reply = tokenizer(" " + turn["content"].strip(), add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
            ids += prompt + reply
            mask += [0] * len(prompt) + [1] * len(reply)
            text = ""
    if train_on == "last_assistant":
        mask = _keep_last_span(mask)
    return ids, mask


def prompt_ids(tokenizer, messages: list[dict], *, chat: bool) -> list[int]:
    """Token ids of a conversation so far, ready for the assistant's reply (evaluation), rendered
    exactly as training renders the same turns."""
    if chat:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    history = list(messages)
    ids: list[int] = []
    if any(t["role"] == "assistant" for t in history):
        last = max(j for j, t in enumerate(history) if t["role"] == "assistant")
        ids, _ = tokenize_conversation(tokenizer, history[: last + 1], chat=False, train_on="all_assistant", where="")
        history = history[last + 1 :]
    text = "".join(
        ("\n\n" if (j or ids) else "") + f"{PLAIN_ROLES[t['role']]}: {t['content'].strip()}"
        for j, t in enumerate(history)
    )
    text += ("\n\n" if text or ids else "") + "Assistant:"
    return ids + tokenizer(text, add_special_tokens=not ids)["input_ids"]
