#!/usr/bin/env bash
# Render report/report.html in headless Chromium, offline (no network: a dead proxy), and check
# that it draws without missing images: a screenshot is written (default /tmp/report.png; look at
# it), every <img> of the loaded DOM is an embedded base64 PNG, nothing refers to an external
# file or URL, and every embedded PNG decodes to a non-empty image.
# Usage: tests/check_report_render.sh [report.html] [screenshot.png]
# Fails (exit 1) when chromium is not installed: `make test-render` installs it (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
html="$(realpath "${1:-report/report.html}")"
shot="${2:-/tmp/report.png}"

chrome="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$chrome" ]]; then
    echo "FAIL: chromium is not installed (make test-render installs it as root:" \
         "apt-get install -y chromium); report not rendered" >&2
    exit 1
fi
if [[ ! -f "$html" ]]; then
    echo "FAIL: $html does not exist (run: snakemake --cores 2 figures)" >&2
    exit 1
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
       --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile"
       --proxy-server="http://127.0.0.1:9" --proxy-bypass-list="<-loopback>")

# 1. screenshot
"$chrome" "${flags[@]}" --screenshot="$shot" --window-size=1200,3000 "file://$html" \
    >/dev/null 2>&1
[[ -s "$shot" ]] || { echo "FAIL: no screenshot written" >&2; exit 1; }

# 2. the DOM after loading, with a marker per image saying whether it decoded
dom="$("$chrome" "${flags[@]}" --virtual-time-budget=10000 --run-all-compositor-stages-before-draw \
    --dump-dom "file://$html" 2>/dev/null)"
n_img="$(grep -o '<img ' <<<"$dom" | wc -l)"
n_data="$(grep -o '<img [^>]*src="data:image/png;base64,' <<<"$dom" | wc -l)"
external="$(grep -Eo '<(img|script|link|iframe)[^>]*(src|href)="(https?:|file:|//)[^"]*' <<<"$dom" || true)"
if [[ "$n_img" -eq 0 || "$n_img" -ne "$n_data" || -n "$external" ]]; then
    echo "FAIL: $n_img images, $n_data embedded; external references: ${external:-none}" >&2
    exit 1
fi

# 3. every embedded image decodes (a broken base64 PNG would render as a missing image)
python3 - "$html" <<'PY'
import base64, re, struct, sys
text = open(sys.argv[1], encoding="utf-8").read()
bad = []
for i, data in enumerate(re.findall(r'src="data:image/png;base64,([^"]+)"', text)):
    raw = base64.b64decode(data, validate=True)
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        bad.append(i)
        continue
    width, height = struct.unpack(">II", raw[16:24])
    if width == 0 or height == 0:
        bad.append(i)
if bad:
    sys.exit(f"FAIL: embedded image(s) {bad} are not valid PNGs")
PY
echo "OK: $n_img embedded images, no external references; screenshot $shot"
