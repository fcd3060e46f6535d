# Sourced by the cmds/ scripts: create .venv if missing and install requirements.txt when it changed.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
source .venv/bin/activate
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # torch first, pinned, so nothing pulls an unpinned (CUDA) build
  python -m pip install -q "$(grep -E '^torch==' requirements.txt)"
  python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
