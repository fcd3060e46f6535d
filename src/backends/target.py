"""Target backend: an HF causal LM with a transformers DynamicCache that the methods extend and roll back."""
import inspect
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache

from src.backends.twin import enlarge, parse_shape, twin_config


class ModelLoadError(RuntimeError):
    pass


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PADDING = re.compile(r"\[PAD\d+\]")  # what a GGUF pads its token list with, up to the embedding rows


def padding_start(tokenizer):
    """Where the padding entries at the end of the vocabulary begin: no text encodes to them, and their
    embedding rows are untrained, so no method may propose or emit them."""
    n = len(tokenizer)
    while n > 0 and PADDING.fullmatch(tokenizer.convert_ids_to_tokens(n - 1) or ""):
        n -= 1
    return n


def stop_ids(model, tokenizer):
    """Every id that ends an answer: the generation config's EOS ids (Qwen's chat models list <|im_end|> and
    <|endoftext|>) and the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return frozenset(int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None)


def pick_device(device=None):
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Target:
    """One sequence at a time. `forward` appends tokens to the cache and returns their logits (fp32).

    Optional `position_ids` and a 4-D `attention_mask` (1, 1, q, cached + q; True = may attend) let a
    method verify a token tree in one forward.
    """

    def __init__(self, path, device=None, dtype=None, threads=None, device_map=None, twin=None):
        """`twin`: a shape (src/backends/twin.py) to enlarge the model at `path` to, built in memory."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"target model not found: {path} has no config.json")
        if twin and device_map is not None:
            raise ModelLoadError("a twin is built on one device; --device-map does not apply")
        if device_map is None:
            self.device = pick_device(device)
        else:
            self.device = None
        if threads and (self.device is None or self.device.type == "cpu"):
            torch.set_num_threads(threads)
        on_gpu = (self.device is not None and self.device.type == "cuda") or device_map is not None
        self.dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
        try:
            self.config = AutoConfig.from_pretrained(str(path))
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            if twin:
                source = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
                self.config = twin_config(source.config, *parse_shape(twin))
                self.model = enlarge(source, self.config, device=self.device, dtype=self.dtype)
            else:
                self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype, device_map=device_map)
        except Exception as e:  # noqa: BLE001 - transformers, safetensors and torch raise many kinds
            raise ModelLoadError(f"cannot load model from {path}: {type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
        if device_map is None:
            self.model.to(self.device)
        else:  # inputs go where the embeddings live
            self.device = self.model.get_input_embeddings().weight.device
        self.model.eval()
        self.stop_ids = stop_ids(self.model, self.tokenizer)
        self.n_real = padding_start(self.tokenizer)  # logits past it are masked
        self.max_length = getattr(self.config, "max_position_embeddings", None)
        self.cache = None
        self.path, self.twin = path, twin
        self.most_threads = 0
        # transformers 5.24 names the cache `cache` (`past_key_values` warns there, to go in 5.40); 5.17, the GPU
        # image's, knows only `past_key_values` and would silently rebuild the cache at every call given `cache`
        forward_args = inspect.signature(self.model.forward).parameters
        self.cache_kw = "cache" if "cache" in forward_args else "past_key_values"

    def watch_threads(self):
        """Count from now the most torch threads a forward runs on; returns what reads the count."""
        self.most_threads = torch.get_num_threads()
        return lambda: self.most_threads

    def set_threads(self, n):
        """torch's threads for a CPU target's next forwards (a GPU target launches kernels from one thread)."""
        if self.device is not None and self.device.type == "cpu" and n != torch.get_num_threads():
            torch.set_num_threads(n)

    def sync(self):
        """Wait for the device: timings that feed a decision or a figure must include the kernels."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def eos_token_id(self):
        return self.tokenizer.eos_token_id

    @property
    def length(self):
        return self.cache.get_seq_length() if self.cache is not None else 0

    def reset(self):
        self.cache = DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def forward(self, tokens, position_ids=None, attention_mask=None):
        """Append `tokens` (list or 1-D tensor) to the cache; return their logits, shape (n, vocab), fp32."""
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device).view(1, -1)
        self.most_threads = max(self.most_threads, torch.get_num_threads())
        kwargs = {}
        if position_ids is not None:
            kwargs["position_ids"] = torch.as_tensor(position_ids, device=self.device).view(1, -1)
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        out = self.model(input_ids=ids, use_cache=True, **{self.cache_kw: self.cache}, **kwargs)
        logits = out.logits[0].float()
        if self.n_real < logits.shape[-1]:
            logits[:, self.n_real:] = float("-inf")
        return logits

    def prefill(self, tokens):
        """Reset the cache and run the prompt; return the logits of its last position."""
        self.reset()
        return self.forward(tokens)[-1]

    def rollback(self, length):
        """Keep the first `length` cached positions."""
        drop = self.length - length
        if drop > 0:
            self.cache.crop(-drop)

    @torch.inference_mode()
    def keep_path(self, start, nodes):
        """Keep the cache up to `start`, then the cached positions start + n for n in `nodes` (a tree path)."""
        idx = {}  # the index on each device the cache lives on (several with --device-map), copied there once
        for layer in self.cache.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name)
                on = idx.setdefault(t.device, torch.as_tensor([start + n for n in nodes], dtype=torch.long,
                                                              device=t.device))
                t[:, :, start:start + len(nodes)] = t.index_select(2, on)
        self.rollback(start + len(nodes))

    def verify_tree(self, tokens, parents):
        """Run a token tree after the cache in one forward and return its logits (n, vocab).

        `parents[i]` is the index of token i's parent in `tokens`, or -1 when its parent is the
        last cached token. Each token sees the cached prefix and its own ancestors, at position
        prefix + depth. Afterwards the cache holds every node; call `keep_path` with the accepted path.
        """
        n, prefix = len(tokens), self.length
        depth, mask = [0] * n, torch.zeros(n, prefix + n, dtype=torch.bool)
        mask[:, :prefix] = True
        for i, p in enumerate(parents):
            if p >= i:
                raise ValueError("tree nodes must come after their parents")
            depth[i] = 0 if p < 0 else depth[p] + 1
            if p >= 0:
                mask[i, prefix:] = mask[p, prefix:]
            mask[i, prefix + i] = True
        positions = [prefix + d for d in depth]
        return self.forward(tokens, position_ids=positions, attention_mask=mask[None, None])

