#!/usr/bin/env bash
# Wheels for a GPU machine with no network (Python 3.12, torch, transformers 5.17 or later, accelerate, numpy,
# scipy, tqdm, matplotlib already there), written to the git-ignored wheels/. Run on any x86-64 Linux with pip:
#   bash cmds/bundle_offline.sh
# - llama-cpp-python built portable: native tuning off, every x86-64 CPU variant built as a backend that
#   ggml picks at run time (AVX2, AVX-512, AMX, ...; src/backends/draft.py loads it). Its package is
#   ctypes-only, so the wheel is py3-none and installs on any CPython 3. OpenMP on, as in the project's own
#   build: the draft's threads persist between decodes (ggml's own pool is made and joined at every decode),
#   with this machine's libgomp shipped beside the libraries (they find it through their $ORIGIN runpath).
# - draftretriever's cp312 manylinux wheel; gguf, fschat, shortuuid, and diskcache (llama_cpp imports it).
#   transformers stays the image's: the project runs on 5.17 as on the pinned 5.24 (cmds/gpu_rehearse.sh).
# cmds/gpu_check.sh installs them with `pip install --no-index --no-deps --target`.
#   bash cmds/bundle_offline.sh --one-variant DIR   the same layout and loader with one CPU variant (AVX2, the
#                                                   floor of x86-64 servers since 2013), built in minutes rather
#                                                   than the 15 variants' half hour, into DIR: the quick rehearsal's
set -euo pipefail
cd "$(dirname "$0")/.."
out=wheels
variants="-DGGML_CPU_ALL_VARIANTS=ON"
if [ "${1:-}" = --one-variant ]; then
  out=${2:?--one-variant needs a folder}
  variants="-DGGML_CPU_ALL_VARIANTS=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
mkdir -p "$out"
pin() { grep -E "^$1==" requirements.txt; }
py=${PYTHON:-python3}
flags="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON $variants -DGGML_OPENMP=ON"
# the portable build takes many minutes: kept outside the checkout, under the pin and flags it was built with
# (pip's own wheel cache would hand back the native build of .venv, whose key ignores CMAKE_ARGS)
built=${DUODEC_CACHE:-$HOME/.cache/duodec}/wheels/$(echo "$(pin llama-cpp-python) $flags" | sha256sum | cut -c1-16)
if ! ls "$out"/llama_cpp_python-*.whl >/dev/null 2>&1 && ! ls "$built"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  build=$(mktemp -d)
  CMAKE_ARGS="$flags" \
    "$py" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python "$(pin llama-cpp-python)" -w "$build"
  # Slim it to what the package loads: the CPU variants beside libllama, one file per library
  # (a wheel stores every symlink as a copy), no headers, no second lib/ folder.
  "$py" -m pip install -q wheel
  "$py" -m wheel unpack -d "$build/unpacked" "$build"/llama_cpp_python-*.whl
  pkg=$(echo "$build"/unpacked/llama_cpp_python-*)
  mv "$pkg"/bin/libggml-cpu*.so "$pkg/llama_cpp/lib/"
  rm -rf "$pkg/bin" "$pkg/lib" "$pkg/include"
  rm -f "$pkg"/llama_cpp/lib/*.so.*.* "$pkg/llama_cpp/lib/libggml-base.so" "$pkg/llama_cpp/lib/libmtmd.so.0"
  cp "$(gcc -print-file-name=libgomp.so.1)" "$pkg/llama_cpp/lib/"
  rm -rf "$built.part" && mkdir -p "$built.part"
  "$py" -m wheel pack -d "$built.part" "$pkg"
  rm -rf "$build" "$built"
  mv "$built.part" "$built"  # whole or not at all
fi
ls "$out"/llama_cpp_python-*.whl >/dev/null 2>&1 || cp "$built"/llama_cpp_python-*.whl "$out/"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out" "$(pin draftretriever)"
"$py" -m pip download -q --no-deps -d "$out" "$(pin gguf)" "$(pin fschat)" "$(pin shortuuid)" "$(pin diskcache)"
ls -l "$out"
du -sh "$out"
