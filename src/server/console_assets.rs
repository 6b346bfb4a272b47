//! The browser console's files, built from `web/` by `build.rs` and embedded in the binary, so
//! that the node serves them itself (no CDN, nothing beside the binary).

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The file served at `path` (`/` is `/index.html`): its contents and content type.
pub fn get(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = if path == "/" { "/index.html" } else { path };
    let (_, contents) = FILES.iter().find(|(name, _)| *name == path)?;
    Some((contents, content_type(path)))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// What `/` says when the console is not in this build.
pub fn missing_page(why: &str) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>kv console</title>\
         <h1>The console is not in this build</h1><p>{}</p>\
         <p>Install Node.js (20 or later) with npm, then build again: <code>cargo build --release</code> runs \
         <code>npm ci</code> and <code>npm run build</code> in <code>web/</code> by itself. \
         <code>/metrics</code>, <code>/health</code> and <code>/ready</code> work without it.</p>",
        why.replace('&', "&amp;").replace('<', "&lt;")
    )
}
