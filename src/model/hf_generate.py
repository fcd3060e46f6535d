"""transformers' own `generate`, as a peer in the same table: plain decoding (`--mode ar`), assisted
generation with an HF draft and transformers' default draft-length schedule (`--mode assisted`), or its
prompt lookup (`--mode lookup`). A streamer records the time of the first token and the tokens each step
adds (the accept lengths)."""
import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from src.argtypes import positive
from src.model.base import Clock, Method, finish

DRAFT = "optional-hf"


def add_args(ap):
    ap.add_argument("--mode", choices=["ar", "assisted", "lookup"], default="ar",
                    help="hf: generate() alone, with assistant_model=the HF --draft, or with prompt_lookup_num_tokens")
    ap.add_argument("--lookup-tokens", type=positive, default=10, help="hf --mode lookup: prompt_lookup_num_tokens")


class StepStreamer(BaseStreamer):
    """The tokens each step of generate() adds. Its first `put` is the prompt."""

    def __init__(self, clock):
        self.clock, self.steps, self.prompt_seen = clock, [], False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.clock.gained(value.flatten().tolist())
        self.steps.append(int(value.numel()))

    def end(self):
        pass


def generation_config(target, sampling, max_new_tokens, mode, lookup_tokens):
    """Every setting given, so that nothing comes from the model's own generation config (Qwen's samples with a
    repetition penalty by default); padding entries suppressed, as the project's target masks them."""
    vocab = target.model.get_output_embeddings().weight.shape[0]
    kw = {"max_new_tokens": max_new_tokens, "do_sample": not sampling.greedy, "eos_token_id": sorted(target.stop_ids),
          "pad_token_id": min(target.stop_ids), "suppress_tokens": list(range(target.n_real, vocab)) or None}
    if not sampling.greedy:
        kw.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
    if mode == "lookup":
        kw["prompt_lookup_num_tokens"] = lookup_tokens
    return GenerationConfig(**kw)


@torch.inference_mode()
def generate(target, prompt_ids, max_new_tokens, sampling, gen, assistant=None, mode="ar", lookup_tokens=10):
    if gen is not None and not sampling.greedy:
        # generate() samples from the global RNG; the question's generator (a CUDA one on a GPU) seeds it
        torch.manual_seed(int(torch.randint(2 ** 62, (), generator=gen, device=gen.device)))
    clock = Clock()
    streamer = StepStreamer(clock)
    ids = torch.tensor([prompt_ids], device=target.device)
    out = target.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                generation_config=generation_config(target, sampling, max_new_tokens, mode,
                                                                    lookup_tokens),
                                assistant_model=assistant)
    tokens = out[0, len(prompt_ids):].tolist()
    return finish(tokens, target.stop_ids, max_new_tokens, streamer.steps, clock)


def make(args, target, draft=None):
    if args.mode == "assisted" and draft is None:
        raise ValueError("hf --mode assisted needs an HF --draft")
    assistant = draft.model if args.mode == "assisted" else None

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return generate(target, prompt_ids, max_new_tokens, sampling, gen, assistant, args.mode, args.lookup_tokens)

    return Method(forward, {"mode": args.mode, "lookup_tokens": args.lookup_tokens if args.mode == "lookup" else None})
