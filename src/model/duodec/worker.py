"""Where the drafter runs while the target verifies: a thread (llama_decode releases the GIL) or its own
process (no GIL shared with the target's thread). One dispatch loop and one way of waiting serve both."""
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass

from src.model.duodec.drafter import Drafter

WORKER_TIMEOUT = 5.0
# a spawned worker re-imports the parent's main module (torch and transformers under src.eval.compare) before it
# loads the draft: on a cold, sandboxed filesystem that alone can take a minute. A worker that dies meanwhile is
# still an error within 50 ms, so a generous bound costs nothing.
READY_TIMEOUT = 300.0
READ_S = 0.02  # seconds a job may take per token of its context, on top: far more than any CPU needs to read one


def job_timeout(job):
    """Seconds a job may take before its worker counts as hung. A job may first read its whole context (a long
    prompt, when the draft did not prefill beside the target), so the bound grows with it; a dead worker is an
    error within 50 ms whatever the bound."""
    return WORKER_TIMEOUT + READ_S * len(job.context)


def split_cores(draft_threads):
    """(target's cores, draft's cores): the draft takes the last `draft_threads` of the cores this process may
    use, the target the rest; None when there are too few to split."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= draft_threads:
        return None
    return set(cores[:-draft_threads]), set(cores[-draft_threads:])


def pin(cores):
    """Pin the calling thread (Linux: pid 0 is the caller, not the whole process) and return what it had."""
    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    return before


@dataclass(kw_only=True)
class DraftJob:
    """Draft sequences continuing `context`: see `Drafter.run`."""
    context: list
    depth: int
    max_seqs: int
    depths: dict = None
    force_k: int = 0
    threads: int = None  # llama.cpp's threads for this job (None: as they are)
    sample: tuple = None  # (temperature, top_k, top_p, seed): draw from the draft (Drafter.draw)

    def run(self, drafter, cancel):
        if self.threads:
            drafter.draft.set_threads(self.threads)
        return drafter.run(self, cancel)


def serve(drafter, next_job, send, cancel):
    """The worker's loop, for both transports: run each job until None, answer ("ok", result, seconds)
    or ("error", traceback, 0), and keep serving."""
    while (job := next_job()) is not None:
        t0 = time.perf_counter()
        try:
            send(("ok", job.run(drafter, cancel), time.perf_counter() - t0))
        except Exception:  # noqa: BLE001 - reported to the caller, who raises it
            send(("error", traceback.format_exc(), 0.0))


def wait_for(ready, fetch, alive, died, timeout):
    """The worker's answer within `timeout` seconds; a dead worker is an error within 50 ms."""
    deadline = time.perf_counter() + timeout
    while not ready(0.05):
        if not alive():
            raise died()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the draft worker gave no answer in {timeout:.0f} s")
    status, out, secs = fetch()
    if status == "error":
        raise RuntimeError(f"the draft worker failed:\n{out}")
    return out, secs


def _thread_main(drafter, next_job, send, cancel, cores):
    pin(cores)
    serve(drafter, next_job, send, cancel)


class ThreadWorker:
    """The drafter in a thread of the target's process; `cores` pins that thread."""

    def __init__(self, draft, cores=None):
        self.jobs, self.results = queue.Queue(), queue.Queue()
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=_thread_main, daemon=True, args=(
            Drafter(draft), self.jobs.get, self.results.put, self.cancel, cores))
        self.thread.start()
        self._answer, self.timeout = None, WORKER_TIMEOUT

    def submit(self, job):
        self.cancel.clear()
        self.timeout = job_timeout(job)
        self.jobs.put(job)

    def stop_early(self):
        """Stop drafting: what the job drafts is no longer wanted."""
        self.cancel.set()

    def _ready(self, timeout):
        if self._answer is None:
            try:
                self._answer = self.results.get(timeout=timeout)
            except queue.Empty:
                return False
        return True

    def _take(self):
        answer, self._answer = self._answer, None
        return answer

    def done(self):
        """Whether the last job's answer is in, without waiting."""
        return self._ready(0)

    def result(self, timeout=None):
        """The last job's answer, within `timeout` seconds (default: its job_timeout)."""
        return wait_for(self._ready, self._take, self.thread.is_alive,
                        lambda: RuntimeError("the draft worker thread died"), timeout or self.timeout)

    def close(self):
        """Stop the thread and wait for it, so that nothing is left inside llama.cpp when the draft is freed."""
        self.jobs.put(None)
        self.thread.join(WORKER_TIMEOUT)


@dataclass(frozen=True)
class WorkerSpec:
    """What the worker process loads: the same model with the same settings as the parent's draft (a llama.cpp
    GGUF, or an HF model on `device` in `dtype`, at its twin shape if it is one: PEARL's), and where it runs
    (`cores`: pinned there, or not)."""
    path: str
    threads: int
    n_ctx: int = 0
    n_seq: int = 1
    repack: str = None
    cores: set = None
    hf_device: str = None  # set: an HF draft on this device
    hf_dtype: str = None
    hf_twin: str = None  # the HF draft's twin shape (src/backends/twin.py), so the worker's costs what the parent's does

    @classmethod
    def of(cls, draft, cores):
        from src.backends.hf_draft import HFDraft
        if isinstance(draft, HFDraft):
            return cls(str(draft.path), draft.threads, cores=cores, hf_device=str(draft.model.device),
                       hf_dtype=str(draft.model.dtype).removeprefix("torch."), hf_twin=draft.model.twin)
        return cls(str(draft.path), draft.threads, draft.n_ctx, draft.n_seq, draft.repack_mode, cores)

    def load(self):
        if self.hf_device:
            import torch

            from src.backends.hf_draft import HFDraft
            from src.backends.target import Target
            return HFDraft(Target(self.path, device=self.hf_device, dtype=getattr(torch, self.hf_dtype),
                                  threads=self.threads, twin=self.hf_twin))
        from src.backends.draft import Draft
        return Draft(self.path, threads=self.threads, n_ctx=self.n_ctx, n_seq=self.n_seq, repack=self.repack)


def _process_main(spec, conn, cancel):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once
    pin(spec.cores)
    if not spec.hf_device:  # llama.cpp has its own threads; torch only draws a sampled chain's tokens
        import torch
        torch.set_num_threads(1)
    drafter = Drafter(spec.load())
    conn.send(("ready", None, 0.0))
    serve(drafter, lambda: conn.poll(None) and conn.recv(), conn.send, cancel)


class ProcessWorker:
    """The drafter in its own process, fed over a pipe; it loads the same draft with the same settings.
    `cores` pins it."""

    def __init__(self, draft, cores=None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.cancel = ctx.Event()
        spec = WorkerSpec.of(draft, cores)
        self.proc = ctx.Process(target=_process_main, daemon=True, args=(spec, child, self.cancel))
        self.timeout = WORKER_TIMEOUT
        self.proc.start()
        self.result(READY_TIMEOUT)  # importing, then loading the model

    def died(self):
        """The worker's end, read after join (exitcode is None until then)."""
        self.proc.join(1)
        code = self.proc.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return RuntimeError(f"the draft worker process died ({how})")

    def submit(self, job):
        self.cancel.clear()
        self.timeout = job_timeout(job)
        try:
            self.conn.send(job)
        except OSError:
            raise self.died() from None

    def stop_early(self):
        """Stop drafting: what the job drafts is no longer wanted."""
        self.cancel.set()

    def done(self):
        """Whether the last job's answer is in (or the worker is gone: result() then says so), without waiting."""
        try:
            return self.conn.poll(0)
        except (EOFError, OSError):
            return True

    def result(self, timeout=None):
        """The last job's answer, within `timeout` seconds (default: its job_timeout)."""
        try:
            return wait_for(self.conn.poll, self.conn.recv, self.proc.is_alive, self.died, timeout or self.timeout)
        except (EOFError, OSError):
            raise self.died() from None

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
            if self.proc.is_alive():
                self.proc.kill()
