#!/usr/bin/env bash
# `make wheelhouse`: wheels of the pinned requirements and everything they need, except the torch stack,
# for a GPU node without network that has its own PyTorch. On that node:
#   pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt
# Variables: WHEELHOUSE (folder, default wheelhouse), WHEEL_PYTHON (the node's Python, default 3.12),
# WHEEL_PLATFORM (default manylinux_2_28_x86_64), WHEEL_EXCLUDE (requirements left out, default
# "torch torchvision"; the node already has them). A dependency published only as source
# (antlr4-python3-runtime) is downloaded as source and built into a wheel here.
set -euo pipefail
OUT=${WHEELHOUSE:-wheelhouse}
PY=${WHEEL_PYTHON:-3.12}
PLATFORM=${WHEEL_PLATFORM:-manylinux_2_28_x86_64}
EXCLUDE=${WHEEL_EXCLUDE:-torch torchvision}
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
rm -rf "$OUT" && mkdir -p "$OUT"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT

# The requirements minus the excluded ones, then what they resolve to (all of their dependencies).
pattern="^($(echo "$EXCLUDE" | tr ' ' '|'))=="
grep -vE '^\s*(#|$)' requirements.txt | grep -viE "$pattern" > "$tmp/wanted.txt" || true
"${PIP[@]}" install --quiet --dry-run --ignore-installed --report "$tmp/report.json" -r "$tmp/wanted.txt"
.venv/bin/python -c "
import json, sys
for item in json.load(open(sys.argv[1]))['install']:
    print(item['metadata']['name'] + '==' + item['metadata']['version'])
" "$tmp/report.json" | sort > "$OUT/requirements.txt"

built=0
while read -r pin; do
  if ! "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version "$PY" \
      --platform "$PLATFORM" --platform manylinux2014_x86_64 --platform linux_x86_64 -d "$OUT" "$pin" 2>/dev/null; then
    "${PIP[@]}" download --quiet --no-deps --no-binary=:all: -d "$tmp/src" "$pin"  # source only: build it
    "${PIP[@]}" wheel --quiet --no-deps -w "$OUT" "$tmp/src"/*
    rm -rf "$tmp/src"
    built=$((built + 1))
  fi
done < "$OUT/requirements.txt"
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels ($built built from source), $(du -sh "$OUT" | cut -f1) in $OUT"
echo "on the node: pip install --no-index --find-links $OUT -r $OUT/requirements.txt"
