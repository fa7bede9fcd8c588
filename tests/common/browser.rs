//! Headless Chromium driven over the DevTools protocol: open a page, run JavaScript in it, wait
//! for conditions, take screenshots. Just enough for the page's end-to-end tests and benchmark.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
pub fn chromium_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// The flags that give a headless Chromium a WebGPU adapter on a machine without a GPU:
/// SwiftShader's. Measured with Debian's Chromium 148 and 156 under `--disable-gpu`:
/// `--enable-unsafe-webgpu` alone gives an adapter on 156 but none on 148; adding
/// `--enable-unsafe-swiftshader` gives SwiftShader's on both (`--use-webgpu-adapter=swiftshader`
/// names which one to take where there is a choice).
pub const WEBGPU_FLAGS: [&str; 3] = [
    "--enable-unsafe-webgpu",
    "--enable-unsafe-swiftshader",
    "--use-webgpu-adapter=swiftshader",
];

/// A headless Chromium with one page, closed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: crate::Scratch,
    /// Console messages and uncaught exceptions seen so far.
    pub console: Vec<String>,
    /// DevTools sessions of the page's workers (after [`Browser::watch_workers`]).
    pub workers: Vec<String>,
}

impl Browser {
    /// Starts Chromium. With `webgpu`, [`WEBGPU_FLAGS`] give the page a WebGPU adapter
    /// (SwiftShader on a machine without a GPU); without them the page has none.
    pub fn launch(webgpu: bool) -> Browser {
        let bin = chromium_bin()
            .expect("chromium is not installed (the test command installs Debian's `chromium`)");
        let profile = crate::Scratch::new(&format!(
            "chromium-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=1100,1400",
        ]);
        cmd.arg(format!("--user-data-dir={}", profile.0.display()));
        if webgpu {
            cmd.args(WEBGPU_FLAGS);
        }
        cmd.arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port");
        let addr = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&addr).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let (ws, _) =
            tungstenite::client(browser_url.as_str(), stream).expect("DevTools handshake");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
            console: Vec::new(),
            workers: Vec::new(),
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.try_send(method, params, session)
            .unwrap_or_else(|err| panic!("DevTools {method} failed: {err}"))
    }

    /// A DevTools command; its error (as DevTools gives it) where it failed.
    fn try_send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let reply = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("DevTools connection lost waiting for {method}: {e}"));
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(err.clone());
                }
                return Ok(v["result"].clone());
            }
            self.note_event(&v);
        }
    }

    fn note_event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = v["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console.push(format!(
                    "console.{}: {}",
                    v["params"]["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                ));
            }
            Some("Runtime.exceptionThrown") => {
                self.console
                    .push(format!("exception: {}", v["params"]["exceptionDetails"]));
            }
            Some("Target.attachedToTarget") if v["params"]["targetInfo"]["type"] == "worker" => {
                if let Some(s) = v["params"]["sessionId"].as_str() {
                    self.workers.push(s.to_string());
                }
            }
            _ => {}
        }
    }

    /// A DevTools command on the browser (not the page).
    pub fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A DevTools command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// From now on, records a DevTools session for every worker the page starts.
    pub fn watch_workers(&mut self) {
        self.call(
            "Target.setAutoAttach",
            json!({"autoAttach": true, "waitForDebuggerOnStart": false, "flatten": true}),
        );
    }

    /// Evaluates JavaScript inside the page's newest worker.
    pub fn eval_in_worker(&mut self, expression: &str) -> Value {
        let session = self
            .workers
            .last()
            .expect("no worker seen (call watch_workers before the page starts one)")
            .clone();
        self.send(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
            Some(&session),
        )
    }

    /// Opens `url` (returns once the navigation is committed; wait for the page's own state).
    pub fn goto(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!(
                "page script `{expression}` threw: {e}\nconsole:\n{}",
                self.console.join("\n")
            );
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; returns its value. Panics after `timeout`. An
    /// expression that throws (say, while the page is still loading) counts as not yet, and so
    /// does an evaluation that DevTools refuses because the page is navigating away.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        );
        let session = self.session.clone();
        loop {
            let v = match self.try_send(
                "Runtime.evaluate",
                json!({"expression": guarded, "awaitPromise": true, "returnByValue": true}),
                Some(&session),
            ) {
                Ok(r) => r["result"]["value"].clone(),
                Err(err) if is_navigation_error(&err) => Value::Null,
                Err(err) => panic!("DevTools Runtime.evaluate failed: {err}"),
            };
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if start.elapsed() > timeout {
                let text = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!(
                    "timed out after {timeout:?} waiting for `{expression}`\npage text:\n{}\nconsole:\n{}",
                    text.as_str().unwrap_or(""),
                    self.console.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses a key (as a keyboard would) in the focused element.
    pub fn press(&mut self, key: &str, code: &str, key_code: u32) {
        let text = if key == "Enter" { "\r" } else { "" };
        let down = json!({"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": key_code, "text": text});
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": key_code}),
        );
    }

    /// The browser's product and version, e.g. `Chrome/156.0.8078.114` (Chromium reports itself
    /// as Chrome, the headless shell as HeadlessChrome).
    pub fn version(&mut self) -> String {
        self.call_browser("Browser.getVersion", json!({}))["product"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    }

    /// Fails at once, naming the browser's version and the flags, when the page open now (a
    /// secure context, e.g. one served from 127.0.0.1) has no WebGPU adapter: the WebGPU tests
    /// need one, and would otherwise fail later on a confusing assertion.
    pub fn require_webgpu_adapter(&mut self) {
        let found = self.eval(
            "(async () => { if (!navigator.gpu) return 'no navigator.gpu'; \
             const a = await navigator.gpu.requestAdapter(); return a ? 'ok' : 'requestAdapter() gave null'; })()",
        );
        if found != "ok" {
            let version = self.version();
            panic!(
                "this test needs a WebGPU adapter and {version} gives none ({}) with the flags {}; \
                 a Chromium that does not honour them cannot run the WebGPU tests",
                found.as_str().unwrap_or("?"),
                WEBGPU_FLAGS.join(" ")
            );
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a DevTools error says the page navigated (or its script context went) while a command
/// ran: a reload the page does itself, such as on a change of model.
fn is_navigation_error(err: &Value) -> bool {
    let message = err["message"].as_str().unwrap_or("");
    [
        "navigated or closed",
        "Execution context was destroyed",
        "Cannot find context",
    ]
    .iter()
    .any(|m| message.contains(m))
}
