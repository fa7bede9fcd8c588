//! A static file server on 127.0.0.1 for the browser tests and the page benchmark: the built page,
//! with extra folders mounted under URL prefixes, the page's Content-Security-Policy on every
//! response, and a count of the bytes it sent for each path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The policy the page also sets in its `<meta>`; sent as a header so the worker gets it too.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'";

/// A running server; it stops when the process ends.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    sent: Arc<Mutex<BTreeMap<String, u64>>>,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "css" => "text/css",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Maps a URL path onto a file: the longest matching mount, else the root. `None` for paths that
/// would leave their folder.
fn resolve(root: &Path, mounts: &[(String, PathBuf)], url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("/");
    let (base, rest) = mounts
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, dir)| (dir.as_path(), &path[prefix.len()..]))
        .unwrap_or((root, path));
    let rel = Path::new(rest.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = base.join(rel);
    Some(if full.is_dir() {
        full.join("index.html")
    } else {
        full
    })
}

impl Server {
    /// Serves `root`, with `mounts` (URL prefix such as `/models/e2e/`, folder) over it.
    pub fn start(root: &Path, mounts: Vec<(String, PathBuf)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(Mutex::new(BTreeMap::new()));
        let root = root.to_path_buf();
        let counter = sent.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, mounts, counter) = (root.clone(), mounts.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &root, &mounts, &counter);
                });
            }
        });
        Server { origin, sent }
    }

    /// Bytes of response bodies sent so far, by URL path.
    pub fn bytes_sent(&self) -> BTreeMap<String, u64> {
        self.sent.lock().unwrap().clone()
    }

    /// A URL on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.origin, path_and_query)
    }
}

fn serve_connection(
    stream: TcpStream,
    root: &Path,
    mounts: &[(String, PathBuf)],
    sent: &Mutex<BTreeMap<String, u64>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        // Skip the headers.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let file = resolve(root, mounts, url);
        let (status, body, ctype) = match file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok().map(|b| (f, b)))
        {
            Some((f, body)) => ("200 OK", body, content_type(f)),
            None => ("404 Not Found", b"not found".to_vec(), "text/plain"),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nContent-Security-Policy: {CSP}\r\nCache-Control: no-store\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        if method != "HEAD" {
            stream.write_all(&body)?;
            let path = url.split(['?', '#']).next().unwrap_or("/").to_string();
            *sent.lock().unwrap().entry(path).or_default() += body.len() as u64;
        }
        stream.flush()?;
    }
}
