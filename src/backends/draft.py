"""Draft backend: a GGUF run by llama.cpp (llama-cpp-python's low-level API) on the CPU.

The context is made by hand, not through `llama_cpp.Llama`, because the high-level class fixes
n_seq_max = 1; DuoDecoding decodes several sequences in one `llama_decode` (unified KV cache).
Logits are read with `llama_get_logits_ith`, since `Llama.scores` is only filled with logits_all.
"""
import ctypes
import functools
from pathlib import Path

import llama_cpp
import numpy as np


class DraftLoadError(RuntimeError):
    pass


class VocabMismatchError(ValueError):
    pass


@llama_cpp.llama_log_callback
def _quiet(level, text, user_data):  # llama.cpp logs every load to stderr; keep errors only
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        print(text.decode(errors="replace"), end="")


_backend_ready = False
AMX_CRASH = "ggml_backend_amx_mul_mat segfaults on quantized weights (llama.cpp #20824; llama-cpp-python 0.3.36)"


@functools.cache
def ggml():
    """llama.cpp's ggml library, the copy libllama loaded (a wheel holds libggml.so and libggml.so.0 as two
    files, and each copy keeps its own backend registry). llama-cpp-python binds no ggml-backend
    functions, so the few used here are bound with ctypes."""
    with open("/proc/self/maps") as maps:
        loaded = [line.split()[-1] for line in maps if "/libggml.so" in line]
    lib = ctypes.CDLL(loaded[0] if loaded else str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    return lib


@functools.cache  # the host's CPU and llama.cpp build do not change in a process
def extra_buffer_types():
    """Names of the CPU backend's extra buffer types on this host, in llama.cpp's order of preference,
    e.g. ['AMX', 'CPU_REPACK']: where quantized weights go when `use_extra_bufts` is on."""
    lib = ggml()
    init_backend()
    dev = lib.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return []
    fn = lib.ggml_backend_reg_get_proc_address(lib.ggml_backend_dev_backend_reg(dev),
                                               b"ggml_backend_dev_get_extra_bufts")
    if not fn:
        return []
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fn)(dev)
    names, i = [], 0
    while bufts and bufts[i]:
        names.append(lib.ggml_backend_buft_name(bufts[i]).decode())
        i += 1
    return names


def use_repack(mode, bufts=None):
    """Whether to let llama.cpp move quantized weights into its extra buffer types.

    auto: yes, unless the CPU backend offers AMX's: its matmul crashes on quantized drafts (every type
    it takes: q4_0, q4_1, q8_0, q4_K, q5_K, q6_K, iq4_xs), and llama.cpp prefers it to the plain
    repacking that works. (Draft turns them back on for an unquantized file, which AMX runs well.)
    Off costs the repacked kernels' speed (README: the draft's step time)."""
    if mode in ("on", "off"):
        return mode == "on"
    bufts = extra_buffer_types() if bufts is None else bufts
    return "AMX" not in bufts


def init_backend():
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        lib = ggml()
        if lib.ggml_backend_dev_count() == 0:
            # a portable build (GGML_BACKEND_DL, cmds/bundle_offline.sh) ships one CPU backend per ISA level
            # as a library to load; ggml picks the best this CPU runs
            package = Path(llama_cpp.__file__).parent
            for folder in (package / "lib", package.parent / "bin"):
                if folder.is_dir():
                    lib.ggml_backend_load_all_from_path(str(folder).encode())
        _backend_ready = True


UNQUANTIZED = {"0", "1", "32"}  # llama_ftype: all f32, mostly f16, mostly bf16


def load_model(path, extra_bufts):
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = extra_bufts
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise DraftLoadError(f"llama.cpp could not load {path} (not a valid GGUF model?)")
    return model


def file_type(model):
    buf = ctypes.create_string_buffer(32)
    n = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
    return buf.value.decode() if n >= 0 else None


class Draft:
    """Sequences 0..n_seq-1 share one unified KV cache. `lengths[s]` is how many tokens sequence s holds."""

    def __init__(self, path, threads=1, n_ctx=2048, n_seq=8, n_batch=512, repack="auto"):
        path = Path(path)
        if not path.is_file():
            raise DraftLoadError(f"draft GGUF not found: {path}")
        init_backend()
        self.repack = use_repack(repack)
        self.model = load_model(path, self.repack)
        if repack == "auto" and not self.repack and file_type(self.model) in UNQUANTIZED:
            llama_cpp.llama_model_free(self.model)  # AMX's f16 kernels work, and are faster: keep them
            self.repack, self.model = True, load_model(path, True)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, n_batch
        cparams.n_seq_max, cparams.kv_unified = n_seq, True
        cparams.n_threads = cparams.n_threads_batch = threads
        # llama.cpp defaults to an f16 KV cache; drafts afford f32, and agree better with the target
        cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32
        cparams.flash_attn_type = 0  # CPU flash attention rounds through f16: logits drift ~1e-2 from HF
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise DraftLoadError(f"llama.cpp could not create a context for {path}")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_real = self.padding_start()  # logits past it are masked
        self.n_ctx, self.n_seq, self.n_batch, self.threads = n_ctx, n_seq, n_batch, threads
        self.repack_mode = repack
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)
        self.lengths = [0] * n_seq
        self.path = path
        self.most_threads = 0

    def set_threads(self, n):
        """llama.cpp's threads from the next decode on: a job that runs alone may take every core."""
        if n != self.threads:
            llama_cpp.llama_set_n_threads(self.ctx, n, n)
            self.threads = n

    def watch_threads(self):
        """Count from now the most threads a decode runs on; returns what reads the count (None: no decode)."""
        self.most_threads = 0
        return lambda: self.most_threads or None

    def close(self):
        if getattr(self, "ctx", None):
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            llama_cpp.llama_model_free(self.model)
            self.ctx = None

    def __del__(self):
        self.close()

    # -- vocabulary -------------------------------------------------------------------------------
    def token_text(self, token_id):
        return llama_cpp.llama_vocab_get_text(self.vocab, token_id).decode("utf-8", errors="replace")

    def padding_start(self):
        """Where the unused entries that pad the token list to the embedding rows begin (n_vocab if none)."""
        n = self.n_vocab
        while n > 0 and llama_cpp.llama_vocab_get_attr(self.vocab, n - 1) & llama_cpp.LLAMA_TOKEN_ATTR_UNUSED:
            n -= 1
        return n

    @property
    def bos_token_id(self):
        return llama_cpp.llama_vocab_bos(self.vocab)

    @property
    def eos_token_id(self):
        return llama_cpp.llama_vocab_eos(self.vocab)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, rows):
        """Decode rows of (token, seq_id, want_logits) in one `llama_decode`.

        Each token goes at the end of its sequence. Returns the logits of the rows that asked for
        them, in order, as an (n, vocab) float32 array.
        """
        if not rows:
            return np.empty((0, self.n_vocab), np.float32)
        if len(rows) > self.n_batch:
            out = [self.decode(rows[i:i + self.n_batch]) for i in range(0, len(rows), self.n_batch)]
            return np.concatenate(out)
        b = self.batch
        for i, (token, seq, want) in enumerate(rows):
            if self.lengths[seq] >= self.n_ctx:
                raise ValueError(f"draft context full ({self.n_ctx} tokens)")
            b.token[i], b.pos[i], b.n_seq_id[i] = token, self.lengths[seq], 1
            b.seq_id[i][0], b.logits[i] = seq, bool(want)
            self.lengths[seq] += 1
        b.n_tokens = len(rows)
        self.most_threads = max(self.most_threads, self.threads)
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        out = [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)).copy()
               for i, (_, _, want) in enumerate(rows) if want]
        if not out:
            return np.empty((0, self.n_vocab), np.float32)
        logits = np.stack(out)
        logits[:, self.n_real:] = -np.inf  # padding entries: never drafted
        return logits

    def eval(self, tokens, seq=0, all_logits=False):
        """Append tokens to one sequence; return the logits of the last one (or of all)."""
        rows = [(t, seq, all_logits or i == len(tokens) - 1) for i, t in enumerate(tokens)]
        logits = self.decode(rows)
        return logits if all_logits else logits[-1]

    def rollback(self, length, seq=0):
        """Keep the first `length` tokens of a sequence."""
        if length < self.lengths[seq]:
            llama_cpp.llama_memory_seq_rm(self.mem, seq, length, -1)
            self.lengths[seq] = length

    def clear(self):
        llama_cpp.llama_memory_clear(self.mem, True)
        self.lengths = [0] * self.n_seq

    def fork(self, src, dst, length=None):
        """Make sequence dst a copy of the first `length` tokens of src (memory sequence ops, no state copy)."""
        length = self.lengths[src] if length is None else length
        llama_cpp.llama_memory_seq_rm(self.mem, dst, -1, -1)
        llama_cpp.llama_memory_seq_cp(self.mem, src, dst, 0, length)
        self.lengths[dst] = length

    def keep_only(self, seq):
        """Keep sequence `seq` as sequence 0 and drop all others."""
        if seq != 0:
            self.fork(seq, 0)
        if any(self.lengths[1:]):  # it walks every cell of the context: a fifth of a draft step at 2048
            llama_cpp.llama_memory_seq_keep(self.mem, 0)
        self.lengths = [self.lengths[0]] + [0] * (self.n_seq - 1)


def check_vocab(draft, tokenizer):
    """Refuse a draft whose vocabulary differs from the target tokenizer's: size, BOS/EOS, and every token's
    string (32000 strings take milliseconds; a sample would miss two swapped ids). Padding entries at the end
    (a GGUF pads its token list to the embedding rows) do not count: neither side ever emits them."""
    from src.backends.target import padding_start

    name = f"draft {draft.path.name}"
    problems = []
    n_target = padding_start(tokenizer)
    if draft.n_real != n_target:
        problems.append(f"vocabulary size {draft.n_real} != target tokenizer's {n_target} (padding excluded)")
    for what, d_id, t_id in (("BOS", draft.bos_token_id, tokenizer.bos_token_id),
                             ("EOS", draft.eos_token_id, tokenizer.eos_token_id)):
        if t_id is not None and d_id != t_id:
            problems.append(f"{what} id {d_id} != target's {t_id}")
    n = min(draft.n_real, n_target)
    target_tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    differ = [i for i, t in enumerate(target_tokens) if t is not None and draft.token_text(i) != t]
    if differ:
        i = differ[0]
        problems.append(f"{len(differ)} token strings differ, first id {i}: {draft.token_text(i)!r} in the draft, "
                        f"{target_tokens[i]!r} in the target")
    if problems:
        raise VocabMismatchError(f"{name} does not match the target's tokenizer: " + "; ".join(problems))
