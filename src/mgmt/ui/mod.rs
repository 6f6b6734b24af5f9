//! The management web UI: one page and its script and stylesheet,
//! embedded in the binary and served on the management port at `/` and
//! `/ui/...`. It is a client of the HTTP API and nothing more: everything
//! it shows or does goes through `/api/...` with the user's credentials,
//! so the API's permission checks (management tags, vhost permissions)
//! are the UI's too. No build step: the files here are what is served.

use super::{Request, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The UI's response to `req` if its path is one of the UI's (`/`,
/// `/index.html`, `/ui/...`); None for any other path.
pub fn handle(req: &Request, path: &str) -> Option<Response> {
    let (body, kind) = match path {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        p if p == "ui" || p.starts_with("ui/") => return Some(not_found()),
        _ => return None,
    };
    if req.method != "GET" && req.method != "HEAD" {
        return Some(Response {
            status: 405,
            headers: vec![
                ("allow", "GET, HEAD".into()),
                ("content-type", "text/plain".into()),
            ],
            body: b"method not allowed\n".to_vec(),
        });
    }
    Some(Response {
        status: 200,
        headers: vec![
            ("content-type", kind.into()),
            // Always checked again: a new binary serves a new UI.
            ("cache-control", "no-cache".into()),
            ("x-content-type-options", "nosniff".into()),
            ("x-frame-options", "DENY".into()),
            (
                "content-security-policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-ancestors 'none'"
                    .into(),
            ),
        ],
        body: body.as_bytes().to_vec(),
    })
}

fn not_found() -> Response {
    Response {
        status: 404,
        headers: vec![("content-type", "text/plain".into())],
        body: b"not found\n".to_vec(),
    }
}
