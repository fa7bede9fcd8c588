// The worker's entry point. The page downloads and compiles the engine (pggan-web_bg.wasm) itself,
// to show its progress, and hands the compiled module over in its first message; wasm-bindgen's
// glue then instantiates it and the engine's start function takes over the messages.
importScripts('./pggan-web.js');
self.onmessage = (event) => {
  self.onmessage = null;
  wasm_bindgen({ module_or_path: event.data.module }).catch((err) => {
    self.postMessage({ op: 'panic', message: `the engine could not start: ${err}` });
  });
};
