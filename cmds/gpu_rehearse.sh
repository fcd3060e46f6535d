#!/usr/bin/env bash
# The GPU machine's device call, rehearsed here (no GPU needed), so that its first run is not where it fails:
#   1. build the bundle (cmds/bundle_offline.sh) and REST's datastore, both carried;
#   2. copy exactly what travels (tracked files, untracked files git does not ignore, the carried paths) to a
#      fresh folder, and refuse when it is over the device tool's 64 MiB;
#   3. make (once; kept under $DUODEC_CACHE) a Python environment with the image's versions of what the project
#      imports (transformers 5.17.0, tokenizers 0.23.2, huggingface_hub 1.33.0, safetensors 0.8.0, accelerate
#      1.15.0; torch as this disk's CPU build, the image's Python 3.12 having none here), and check that every
#      wheel for the image's 3.12 fits it;
#   4. run the device command there as the device runs it (wheels installed with --no-index --no-deps --target,
#      PYTHONPATH, one import check), its CPU smoke, with $OUT set;
#   5. check what came back in $OUT against the device tool's limits (8 files, 16 MiB each, 2 folders deep).
#   bash cmds/gpu_rehearse.sh            (or bash cmds/gpu_check.sh --rehearse); REHEARSAL_DIR=DIR keeps its files
#   bash cmds/gpu_rehearse.sh --quick    llama.cpp built with one CPU variant, not the bundle's 15 (same layout,
#                                        same loader; minutes, not half an hour): what CI runs
set -euo pipefail
cd "$(dirname "$0")/.."
work=${REHEARSAL_DIR:-$(mktemp -d)}
mkdir -p "$work"
LIMIT=$((64 * 1024 * 1024))
say() { echo "[rehearsal] $*"; }

# 1. what the command needs, made where pip works
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && py=.venv/bin/python
wheels=wheels
if [ "${1:-}" = --quick ]; then
  # the bundle's other wheels, and the one-variant llama.cpp in place of the bundle's own
  wheels=$work/wheels
  rm -rf "$wheels" && mkdir -p "$wheels"
  PYTHON=$py bash cmds/bundle_offline.sh --one-variant "$wheels" >/dev/null
else
  PYTHON=$py bash cmds/bundle_offline.sh >/dev/null
fi
"$py" -m src.tools.build_rest_datastore --demo

# 2. what travels
tree=$work/tree
rm -rf "$tree" "$work/out"
mkdir -p "$tree" "$work/out"
{ git ls-files; git ls-files --others --exclude-standard; } | sort -u | while read -r f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$tree"
rm -rf "$tree/wheels" && cp -r "$wheels" "$tree/wheels"
cp -r --parents data/rest "$tree"
size=$(du -sb "$tree" | cut -f1)
say "what travels: $((size / 1024 / 1024)) MiB (tracked $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1 | awk '{printf "%d", $1 / 1048576}') MiB, wheels $(du -sm "$wheels" | cut -f1) MiB, data/rest $(du -sm data/rest | cut -f1) MiB)"
if [ "$size" -gt "$LIMIT" ]; then
  echo "error: what travels is $((size / 1024 / 1024)) MiB, over the device tool's 64 MiB" >&2
  exit 1
fi

# 3. the image's versions, and the wheels its Python 3.12 will take
# (kept outside the checkout under its versions, made whole or made again: it takes minutes)
versions="torch==2.13.0 transformers==5.17.0 tokenizers==0.23.2 huggingface_hub==1.33.0 safetensors==0.8.0 \
accelerate==1.15.0 numpy scipy tqdm matplotlib"
image=${DUODEC_CACHE:-$HOME/.cache/duodec}/rehearsal-image-$(echo "$versions" | sha256sum | cut -c1-16)
if [ ! -e "$image/complete" ]; then
  rm -rf "$image"
  python3 -m venv "$image"
  "$image/bin/python" -m pip install -q --upgrade pip
  "$image/bin/python" -m pip install -q $versions
  touch "$image/complete"
fi
for w in "$wheels"/*.whl; do
  tags=$(basename "$w" .whl | rev | cut -d- -f1-3 | rev)
  case $tags in
    py3-none-any|py3-none-linux_x86_64|cp312-cp312-manylinux*x86_64*|*-abi3-manylinux*x86_64*) ;;
    *) echo "error: $w ($tags) will not install on the image's Python 3.12, x86-64" >&2; exit 1;;
  esac
done
say "every wheel fits Python 3.12 on x86-64"
# this Python's own build of the one compiled wheel, beside the image's (pip takes whichever fits)
"$image/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$tree/wheels" "$(grep -E '^draftretriever==' requirements.txt)"

# 4. the device command, as the device runs it
say "running the device command's CPU smoke in $tree"
(cd "$tree" && env -u VIRTUAL_ENV OUT="$work/out" PYTHON="$image/bin/python" TMPDIR="$work" bash cmds/gpu_check.sh --cpu-smoke)

# 5. what came back
files=$(cd "$work/out" && find . -type f | sort)
n=$(echo "$files" | grep -c . || true)
deep=$(cd "$work/out" && find . -mindepth 4 | head -1)
big=$(find "$work/out" -type f -size +16M | head -1)
say "came back in \$OUT: $(echo "$files" | tr '\n' ' ')"
for want in ./log.txt ./report.md ./run.tgz; do
  echo "$files" | grep -qx "$want" || { echo "error: \$OUT lacks ${want#./}" >&2; exit 1; }
done
[ "$n" -le 8 ] && [ -z "$deep" ] && [ -z "$big" ] || { echo "error: \$OUT is over the device tool's limits" >&2; exit 1; }
listing=$(tar tzf "$work/out/run.tgz")
echo "$listing" | grep -q 'duodec.jsonl$' || { echo "error: run.tgz holds no answers" >&2; exit 1; }
say "ok: the device call would install, import, decode and bring its results back"
