"""Serves the built page on 127.0.0.1 with gzip, the way the page should be served anywhere.

    python3 scripts/serve.py --dir DIST [--port 8080]

Python's standard static server, plus: responses gzip-compressed when the browser accepts it
(the engine's 13.7 MB of wasm travel as 2.7 MB; pictures are sent as they are, already
compressed), each file compressed once and kept until it changes; `Cache-Control: no-cache` so
the browser revalidates (a 304 when unchanged). Prints the address it serves once listening
(with --port 0, the port the system chose).
"""
import argparse
import functools
import gzip
import http.server
import io
import os
import sys

# Already compressed: sent as they are.
STORED = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".webm", ".gz", ".br"}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".json": "application/json",
        ".safetensors": "application/octet-stream",
    }
    compressed = {}  # path -> (mtime, size, gzip bytes)

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        wants_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        ext = os.path.splitext(path)[1].lower()
        if not wants_gzip or ext in STORED or not os.path.isfile(path):
            return super().send_head()
        stat = os.stat(path)
        if self.headers.get("If-Modified-Since") == self.date_time_string(int(stat.st_mtime)):
            self.send_response(304)
            self.end_headers()
            return None
        kept = self.compressed.get(path)
        if kept is None or kept[:2] != (stat.st_mtime, stat.st_size):
            with open(path, "rb") as f:
                kept = (stat.st_mtime, stat.st_size, gzip.compress(f.read(), 6))
            self.compressed[path] = kept
        body = kept[2]
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, format, *args):
        pass  # quiet: the page's requests are many and uneventful


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the built page (build_page's WEB_DIST)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.dir, "index.html")):
        sys.exit(f"error: {args.dir} holds no built page (index.html); build it first")
    handler = functools.partial(Handler, directory=args.dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"serving the page at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
