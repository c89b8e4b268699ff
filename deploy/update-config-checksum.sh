#!/usr/bin/env bash
# Recomputes the Deployment's `checksum/config` pod-template annotation in conf/kubernetes.yaml
# from the ConfigMap's gateway.toml block, in place, so a config change rolls the pods.
#
#   deploy/update-config-checksum.sh [--check] [MANIFEST]
#
#   MANIFEST  default: conf/kubernetes.yaml of this repository
#   --check   change nothing; exit 1 when the annotation is stale (used by check-kubernetes.sh)
#
# The checksum is the sha256 of the block's content as YAML reads it: the lines under
# `gateway.toml: |` with the block's indentation removed, ending in one newline. Needs only
# python3 (standard library) and sha256sum; with PyYAML present the extraction is
# cross-checked against a real YAML parse.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
check_only=0
manifest=""
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "update-config-checksum: unknown option $arg" >&2; exit 2 ;;
    *) manifest="$arg" ;;
  esac
done
manifest="${manifest:-$here/../conf/kubernetes.yaml}"
[ -f "$manifest" ] || { echo "update-config-checksum: no such file: $manifest" >&2; exit 2; }

# 1. Extract the gateway.toml block (literal block scalar) of the ConfigMap.
extract() {
  python3 - "$manifest" <<'PY'
import re
import sys

path = sys.argv[1]
lines = open(path, encoding="utf-8").read().split("\n")
key = re.compile(r"^(?P<indent> *)gateway\.toml: *\|(?P<chomp>[-+]?) *(#.*)?$")
starts = [i for i, line in enumerate(lines) if key.match(line)]
if len(starts) != 1:
    sys.exit(f"update-config-checksum: expected one `gateway.toml: |` block in {path}, "
             f"found {len(starts)}")
start = starts[0]
m = key.match(lines[start])
key_indent, chomp = len(m["indent"]), m["chomp"]
body = []
block_indent = None
for line in lines[start + 1:]:
    if line.strip() == "":
        body.append(line)
        continue
    indent = len(line) - len(line.lstrip(" "))
    if indent <= key_indent:
        break
    if block_indent is None:
        block_indent = indent
    if indent < block_indent:
        break
    body.append(line)
if block_indent is None:
    sys.exit("update-config-checksum: the gateway.toml block is empty")
# Lines of spaces only are empty lines; spaces past the block indentation are content.
body = [line[block_indent:] for line in body]
text = "\n".join(body)
if chomp == "+":
    text += "\n"
else:
    text = text.rstrip("\n")
    if chomp == "":
        text += "\n"

# Cross-check with a real YAML parser when one is installed.
try:
    import yaml
except ImportError:
    yaml = None
if yaml is not None:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    maps = [d for d in docs if d.get("kind") == "ConfigMap" and "gateway.toml" in (d.get("data") or {})]
    if len(maps) != 1 or maps[0]["data"]["gateway.toml"] != text:
        sys.exit("update-config-checksum: the extracted gateway.toml differs from the YAML "
                 "parse; the block is not a plain literal block")
sys.stdout.write(text)
PY
}

content="$(extract; echo x)"   # the trailing x keeps the final newline through $(...)
content="${content%x}"
sum="$(printf '%s' "$content" | sha256sum | cut -d' ' -f1)"

# 2. Compare with, or rewrite, the annotation (exactly one `checksum/config:` line).
python3 - "$manifest" "$sum" "$check_only" <<'PY'
import re
import sys

path, new, check_only = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
text = open(path, encoding="utf-8").read()
pattern = re.compile(r'^(?P<head> *checksum/config: *)(?P<value>"[^"\n]*"|\'[^\'\n]*\'|[^ #\n]*)(?P<tail>.*)$',
                     re.M)
found = list(pattern.finditer(text))
if len(found) != 1:
    sys.exit(f"update-config-checksum: expected one checksum/config annotation in {path}, "
             f"found {len(found)}")
old = found[0]["value"].strip("\"'")
if old == new:
    print(f"checksum/config is up to date: {new}")
    sys.exit(0)
if check_only:
    print(f"checksum/config is STALE in {path}: annotation {old or '(empty)'}, "
          f"gateway.toml hashes to {new}; run deploy/update-config-checksum.sh",
          file=sys.stderr)
    sys.exit(1)
text = pattern.sub(lambda m: f'{m["head"]}"{new}"{m["tail"]}', text, count=1)
import os
import shutil

tmp = path + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
shutil.copymode(path, tmp)
os.replace(tmp, path)
print(f"checksum/config updated: {old or '(empty)'} -> {new}")
PY
