"""Prompts: the model's own chat template, fschat conversation templates (the upstream grid's chat models), or
the raw text for code and base models."""
from fastchat.conversation import get_conv_template


class PromptError(ValueError):
    pass


def messages(turns, answers):
    """The conversation up to the last of `turns`, as chat messages."""
    out = []
    for i, turn in enumerate(turns):
        out.append({"role": "user", "content": turn})
        if i < len(turns) - 1:
            out.append({"role": "assistant", "content": answers[i]})
    return out


def prompt_ids(tokenizer, template, turns, answers):
    """The token ids of the prompt for the last of `turns`. "chat" renders the tokenizer's own chat template
    with the generation prompt, exactly as `apply_chat_template` tokenizes it."""
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise PromptError("template 'chat': the target's tokenizer has no chat template (pass --template raw "
                              "or an fschat name)")
        return list(tokenizer.apply_chat_template(messages(turns, answers), add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"])
    return tokenizer(build_prompt(template, turns, answers))["input_ids"]


def build_prompt(template, turns, answers):
    """The prompt text for the last of `turns`, after the earlier turns and their `answers`."""
    if template == "chat":
        raise PromptError("template 'chat' is rendered by the tokenizer: use prompt_ids")
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
