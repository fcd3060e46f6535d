"""The identity of the machine a run measured: CPU, its vector extensions, GPU, llama.cpp's build, versions."""
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version

ISA = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"]


def cpu_info():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, [f for f in ISA if f in flags]


def native_bf16():
    """Whether the CPU computes bf16 natively (AMX, AVX-512-BF16): there a bf16 target verifies 8 tokens for
    about the cost of one."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_info()[1]))


def package_version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def commit():
    """The repository's commit, '+' where the working tree differs from it; None outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "") if head.returncode == 0 else None


def machine():
    import torch

    model, isa = cpu_info()
    info = {"cpu": model, "cores": len(os.sched_getaffinity(0)), "isa": isa,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": package_version("transformers"), "llama-cpp-python": package_version("llama_cpp_python"),
            "commit": commit()}
    try:
        import llama_cpp

        from src.backends.draft import init_backend
        init_backend()  # a portable build loads its CPU backend first: the system info names that one's features
        info["llama.cpp"] = llama_cpp.llama_print_system_info().decode().strip()
    except ImportError:
        info["llama.cpp"] = None
    return info


def host_tag(info):
    """A short name for run folders: vendor family and core count, e.g. 'intel-xeon-2c'."""
    words = re.findall(r"[a-z]+", info["cpu"].lower().replace("(r)", "").replace("(tm)", ""))
    family = "-".join(w for w in words if w in ("intel", "xeon", "amd", "epyc", "ryzen", "core")) or "cpu"
    gpu = "" if info["gpu"] == "none" else "-" + re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    return f"{family}-{info['cores']}c{gpu}"


def describe(info):
    """One line for tables: 'Intel(R) Xeon(R) Processor, 2 cores, AVX2 AVX512F AMX_INT8; llama-cpp-python 0.3.36'."""
    isa = " ".join(f.upper() for f in info.get("isa", [])) or "ISA not recorded"
    versions = ", ".join(f"{k} {info[k]}" for k in ("torch", "transformers", "llama-cpp-python") if info.get(k))
    gpu = f", GPU {info['gpu']}" if info.get("gpu", "none") != "none" else ""
    at = f"; commit {info['commit']}" if info.get("commit") else ""
    return f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores{gpu}, {isa}; {versions}{at}"
