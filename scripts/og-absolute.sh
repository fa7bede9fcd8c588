#!/usr/bin/env bash
# Makes the link preview's image absolute in a built page served at an address (most previewers
# need an absolute og:image) and adds og:url. build_page runs it when PGGAN_PUBLIC_URL is set.
#   bash scripts/og-absolute.sh DIST/index.html https://example.org/faces/
set -euo pipefail
page="$1"
url="${2%/}"
case "$url" in
    http://*|https://*) ;;
    *) echo "error: the page's public address must start with http:// or https://, not '$url'" >&2; exit 1 ;;
esac
if printf '%s' "$url" | grep -q '["<>|&\\[:space:]]'; then
    echo "error: the page's public address holds a character this script does not put in a page (\" < > | & \\ or a space): '$url'" >&2
    exit 1
fi
grep -q '<meta property="og:image" content="og-image.jpg">' "$page" || {
    echo "error: $page has no relative og:image to make absolute" >&2
    exit 1
}
sed -i "s|<meta property=\"og:image\" content=\"og-image.jpg\">|<meta property=\"og:image\" content=\"$url/og-image.jpg\">\\n  <meta property=\"og:url\" content=\"$url/\">|" "$page"
