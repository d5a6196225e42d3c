#!/usr/bin/env bash
# Regenerates samples/text-lines/*.png (committed; not run by npm start or npm test).
# Needs ImageMagick and the DejaVu fonts: apt-get install imagemagick fonts-dejavu-core
set -euo pipefail
cd "$(dirname "$0")/../samples/text-lines"
i=0
while IFS='|' read -r text font; do
  i=$((i + 1))
  convert -background white -fill black -font "$font" -pointsize 40 label:"$text" \
    -bordercolor white -border 12x8 -colorspace Gray -depth 8 -strip "$(printf '%02d.png' "$i")"
done <<'LINES'
STOP|DejaVu-Sans-Bold
EXIT 42|DejaVu-Sans-Bold
SPEED LIMIT 50|DejaVu-Sans-Bold
ONE WAY|DejaVu-Sans
NO PARKING|DejaVu-Sans-Bold
KA05MX1234|DejaVu-Sans-Mono-Bold
B-EV 2026|DejaVu-Sans-Mono-Bold
CHARGING ONLY|DejaVu-Sans
YIELD|DejaVu-Serif-Bold
7XYZ481|DejaVu-Sans-Mono
LINES
