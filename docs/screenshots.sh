#!/usr/bin/env bash
# The screenshots of docs/warehouse.md: `factory show --html` and `factory report` on the example warehouse,
# rendered by headless Chromium (Debian's `chromium`), then reduced to 256 colours so each PNG stays small.
#   bash docs/screenshots.sh            (FACTORY=... to use another console script, e.g. `.venv/bin/factory`)
set -euo pipefail
cd "$(dirname "$0")/.."
FACTORY=${FACTORY:-factory}
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$FACTORY show -w warehouse.duckdb.example harvest-e5961ad826/MUL0016.json/0 --html "$tmp/tree.html"
$FACTORY report -w warehouse.duckdb.example harvest-e5961ad826 harvest-849e68576c eval-86130c73c5 --out "$tmp/report"
shot() {  # page, png, width, height
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --virtual-time-budget=3000 \
    --user-data-dir="$tmp/profile" --screenshot="$2" --window-size="$3,$4" "file://$1" 2>/dev/null
}
shot "$tmp/tree.html" docs/show.png 1600 820
shot "$tmp/report/report.html" docs/report.png 1240 1800
$PYTHON - docs/show.png docs/report.png <<'PY'
import sys
from PIL import Image
for path in sys.argv[1:]:
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
PY
ls -l docs/show.png docs/report.png
