"""Prompts: fschat conversation templates for chat models, the raw text for code and base models."""
from fastchat.conversation import get_conv_template


class PromptError(ValueError):
    pass


def build_prompt(template, turns, answers):
    """The prompt for the last of `turns`, after the earlier turns and their `answers`."""
    if template == "raw":
        parts = []
        for i, turn in enumerate(turns):
            parts.append(turn)
            if i < len(answers) and i < len(turns) - 1:
                parts.append(answers[i])
        return "".join(parts)
    try:
        conv = get_conv_template(template)
    except KeyError:
        raise PromptError(f"unknown conversation template {template!r} (fschat names, or 'raw')") from None
    for i, turn in enumerate(turns):
        conv.append_message(conv.roles[0], turn)
        conv.append_message(conv.roles[1], answers[i] if i < len(turns) - 1 else None)
    return conv.get_prompt()


def check_prompt(prompt_ids, turn_text, max_new_tokens, max_length, where):
    if not turn_text.strip():
        raise PromptError(f"{where}: empty prompt")
    if max_length and len(prompt_ids) + max_new_tokens > max_length:
        raise PromptError(f"{where}: prompt of {len(prompt_ids)} tokens + {max_new_tokens} new tokens exceeds "
                          f"the target's context of {max_length} tokens")
