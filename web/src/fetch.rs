//! Downloads from the worker with progress, bounded in size, and the model's files kept in the
//! browser's Cache Storage so that a second visit downloads none of them.

use js_sys::{Array, ArrayBuffer, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, ReadableStreamDefaultReader, Request, RequestCache, RequestInit, Response,
    WorkerGlobalScope,
};

/// The page's cache in the browser's Cache Storage (the page keeps the engine there too).
pub const CACHE_NAME: &str = "pggan-v1";

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
async fn fetch_bytes(url: &str, progress: impl FnMut(u64, Option<u64>)) -> Result<Vec<u8>, String> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    read_response(url, scope.fetch_with_str(url), progress).await
}

/// Fetches `url` past the browser's HTTP cache (revalidated with the server every time): for the
/// manifest, which says which version of the model's files to use.
pub async fn fetch_fresh(url: &str) -> Result<Vec<u8>, String> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let init = RequestInit::new();
    init.set_cache(RequestCache::NoCache);
    read_response(url, scope.fetch_with_str_and_init(url, &init), |_, _| {}).await
}

async fn read_response(
    url: &str,
    fetching: js_sys::Promise,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>, String> {
    let response: Response = JsFuture::from(fetching)
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

/// An exported model's files at one version: fetched as `{base}{file}?v={version}` and kept in
/// Cache Storage under that URL, so a second visit reads them from there, and a new export (a
/// changed manifest, so a new version) is fetched anew, never served stale. Without Cache
/// Storage (an insecure origin) files are simply downloaded.
pub struct ModelFiles {
    /// The model's folder URL, ending in `/`.
    pub base: String,
    /// A digest of the manifest's bytes.
    pub version: String,
}

impl ModelFiles {
    /// The files of the model in `base` whose manifest is `manifest`.
    pub fn new(base: String, manifest: &[u8]) -> Self {
        Self {
            base,
            version: format!("{:016x}", pggan_model::rng::fnv1a(manifest)),
        }
    }

    /// `file` of the model, from the cache or downloaded (with `progress`) and then cached.
    pub async fn get(
        &self,
        file: &str,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, String> {
        let url = format!("{}{file}?v={}", self.base, self.version);
        let cache = open_cache().await;
        if let Some(cache) = &cache
            && let Some(bytes) = cached(cache, &url).await
        {
            progress(bytes.len() as u64, Some(bytes.len() as u64));
            return Ok(bytes);
        }
        let mut bytes = fetch_bytes(&url, progress).await?;
        if let Some(cache) = &cache {
            keep(cache, &url, &mut bytes).await;
        }
        Ok(bytes)
    }
}

async fn open_cache() -> Option<Cache> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let caches = scope.caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

async fn cached(cache: &Cache, url: &str) -> Option<Vec<u8>> {
    let found = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    let response: Response = found.dyn_into().ok()?;
    let buffer: ArrayBuffer = JsFuture::from(response.array_buffer().ok()?)
        .await
        .ok()?
        .dyn_into()
        .ok()?;
    Some(Uint8Array::new(&buffer).to_vec())
}

/// Stores `bytes` under `url` and drops the other versions of the same file. Failures (a full
/// disk, say) are ignored: the file is simply downloaded again next time.
async fn keep(cache: &Cache, url: &str, bytes: &mut [u8]) {
    let Ok(response) = Response::new_with_opt_u8_array(Some(bytes)) else {
        return;
    };
    if JsFuture::from(cache.put_with_str(url, &response))
        .await
        .is_err()
    {
        return;
    }
    // Cache keys are absolute URLs.
    let Ok(absolute) = Request::new_with_str(url).map(|r| r.url()) else {
        return;
    };
    let Some(path) = absolute.split('?').next() else {
        return;
    };
    let Ok(keys) = JsFuture::from(cache.keys()).await else {
        return;
    };
    for request in Array::from(&keys).iter() {
        let Ok(request) = request.dyn_into::<Request>() else {
            continue;
        };
        let other = request.url();
        if other != absolute && other.split('?').next() == Some(path) {
            let _ = JsFuture::from(cache.delete_with_request(&request)).await;
        }
    }
}
