//! Downloads from the worker with progress, bounded in size.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStreamDefaultReader, Response, WorkerGlobalScope};

/// Largest file the page downloads (a model file is a few MB).
pub const MAX_FILE_BYTES: usize = 256 << 20;

/// A JS exception as text.
pub fn js_error(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Fetches `url` into memory, calling `progress(bytes so far, content length if known)` after every
/// chunk. Refuses HTTP errors and files over [`MAX_FILE_BYTES`].
pub async fn fetch_bytes(
    url: &str,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>, String> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: Response = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| format!("could not download {url}: {}", js_error(e)))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!(
            "could not download {url}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok());
    if length.is_some_and(|l| l > MAX_FILE_BYTES as u64) {
        return Err(format!("{url} is larger than {} MB", MAX_FILE_BYTES >> 20));
    }
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut out = Vec::with_capacity(length.unwrap_or(0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("downloading {url} failed: {}", js_error(e)))?;
        if Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(js_error)?
            .unchecked_into();
        let start = out.len();
        if start + value.length() as usize > MAX_FILE_BYTES {
            return Err(format!("{url} is larger than {} MB", MAX_FILE_BYTES >> 20));
        }
        out.resize(start + value.length() as usize, 0);
        value.copy_to(&mut out[start..]);
        progress(out.len() as u64, length);
    }
    Ok(out)
}
