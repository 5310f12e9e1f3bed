//! The web console: the built files of `webui/` (`[webui] directory`), served for every path
//! outside `/api/`.
//!
//! A path naming a file serves it with its content type. `index.html` and any other path
//! without a file (the console's own routes, such as `/probes`) serve `index.html`, so a
//! reload or a bookmark of a console page works (SPA fallback). Files under `/assets/` carry a
//! content hash in their names, so they are cached for a year; `index.html` is revalidated on
//! every load so a new console is picked up at once. A missing asset is a 404, never the
//! index page (a stale page asking for an old bundle must fail visibly).

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_common::http::ApiError;

/// Where the built console lives in the image.
pub const DEFAULT_DIRECTORY: &str = "/usr/share/rookery/webui";

/// `Content-Security-Policy` of the console's pages: only its own scripts, styles and API.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `Cache-Control` of content-hashed assets (`/assets/…`).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of `index.html` and other unhashed files.
pub const REVALIDATE: &str = "no-cache";

/// The content type of a file, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// The file under `root` that a URL path names, or `None` if the path tries to leave `root`
/// (`..`, absolute components) or is not valid.
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.trim_start_matches('/');
    let mut out = root.to_path_buf();
    for part in Path::new(rel).components() {
        match part {
            Component::Normal(p) => {
                let s = p.to_str()?;
                if s.starts_with('.') || s.contains('\\') {
                    return None;
                }
                out.push(p);
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn file_response(path: &Path, bytes: Vec<u8>, cache: &'static str, head: bool) -> Response {
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    resp
}

/// Answers a non-API request from the console in `root`.
pub async fn serve(root: PathBuf, method: Method, url_path: String) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the console's files are only read (GET)",
        )
        .into_response();
    }
    let head = method == Method::HEAD;
    let index = root.join("index.html");
    let Some(path) = resolve(&root, &url_path) else {
        return ApiError::not_found("no such file").into_response();
    };
    let in_assets = url_path.starts_with("/assets/");
    if path != root && path != index {
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let cache = if in_assets { IMMUTABLE } else { REVALIDATE };
                return file_response(&path, bytes, cache, head);
            }
            Err(_) if in_assets => {
                return ApiError::not_found(format!("no console asset {url_path}")).into_response();
            }
            // A directory or a console route: the index page.
            Err(_) => {}
        }
    }
    match tokio::fs::read(&index).await {
        Ok(bytes) => file_response(&index, bytes, REVALIDATE, head),
        Err(err) => ApiError::not_found(format!(
            "the web console is not installed: cannot read {}: {err}",
            index.display()
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_the_root() {
        let root = Path::new("/srv/webui");
        assert_eq!(
            resolve(root, "/assets/index-abc.js"),
            Some(PathBuf::from("/srv/webui/assets/index-abc.js"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/webui")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/assets/../../x"), None);
        assert_eq!(resolve(root, "/.git/config"), None);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("x.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("x.svg")), "image/svg+xml");
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
