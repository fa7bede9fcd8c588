#!/usr/bin/env bash
# Writes an address into a built page: `public`, where the page is served (its link preview's
# image made absolute, as most previewers need, and og:url added), or `source`, where this
# project's source is published (the page then links to it). build_page runs it when
# PGGAN_PUBLIC_URL or PGGAN_SOURCE_URL is set. Refuses an address it cannot put in a page safely,
# leaving the page as it was.
#   bash scripts/page-urls.sh DIST/index.html public https://example.org/faces/
#   bash scripts/page-urls.sh DIST/index.html source https://example.org/pggan
set -euo pipefail
page="$1"
kind="$2"
url="${3%/}"
case "$url" in
    http://*|https://*) ;;
    *) echo "error: the $kind address must start with http:// or https://, not '$url'" >&2; exit 1 ;;
esac
if printf '%s' "$url" | grep -q '["<>|&\\[:space:]]'; then
    echo "error: the $kind address holds a character this script does not put in a page (\" < > | & \\ or a space): '$url'" >&2
    exit 1
fi
case "$kind" in
    public)
        from='<meta property="og:image" content="og-image.jpg">'
        to="<meta property=\"og:image\" content=\"$url/og-image.jpg\">\\n  <meta property=\"og:url\" content=\"$url/\">"
        ;;
    source)
        from='<meta name="pggan-source" content="">'
        to="<meta name=\"pggan-source\" content=\"$url\">"
        ;;
    *) echo "error: the kind of address is 'public' or 'source', not '$kind'" >&2; exit 1 ;;
esac
grep -qF "$from" "$page" || {
    echo "error: $page has no empty place for the $kind address" >&2
    exit 1
}
sed -i "s|$from|$to|" "$page"
