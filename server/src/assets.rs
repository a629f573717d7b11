//! The built site's static files as the release artifact serves them: embedded in the binary
//! (see `build.rs`), each with its brotli and gzip forms, picked by `Accept-Encoding`.
//!
//! The app's own files (`pkg/<output>.{js,wasm,css}`) are also served under a name carrying
//! the build's hash (`pkg/tether.<hash>.wasm`), which is the name pages link to; those never
//! change, so browsers and proxies may keep them for a year (`immutable`). Every other file
//! (the worker script, the icon, the unhashed names) is revalidated on each use (`no-cache`,
//! with an `ETag`), and pages are kept briefly ([`HTML_CACHE`]).
//!
//! A server built without an embedded site (tests, debug builds) serves `--site-root` from
//! disk instead (`http::router`).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

/// A site embedded at build time.
pub struct Site {
    /// Names the app's JS, wasm and CSS together: a hash of their contents.
    pub build_hash: &'static str,
    /// The name cargo-leptos gave the app's files (`tether`).
    pub output_name: &'static str,
    pub files: &'static [EmbeddedFile],
}

/// One file of the site, with the compressed forms cargo-leptos made of it.
pub struct EmbeddedFile {
    /// Relative to the site root, `/`-separated (`pkg/tether.wasm`).
    pub path: &'static str,
    /// A hash of the contents, for the `ETag`.
    pub tag: &'static str,
    pub identity: &'static [u8],
    pub br: Option<&'static [u8]>,
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/site.rs"));

/// Files whose name carries their build's hash: the same name never has other contents.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Files under a stable name: kept, but asked about (`If-None-Match`) before each use.
pub const REVALIDATE: &str = "no-cache";
/// Pages: a minute in this browser only, never in a shared cache (each page carries its own
/// CSP nonce). A page links to the hashed files of the build that rendered it, which the
/// browser keeps, so a page still cached across a deploy loads the build it names.
pub const HTML_CACHE: &str = "private, max-age=60";

/// The embedded site, ready to answer requests by path.
pub struct Assets {
    site: &'static Site,
    by_path: HashMap<String, Entry>,
}

struct Entry {
    file: &'static EmbeddedFile,
    cache: &'static str,
}

impl Assets {
    /// The site embedded in this binary, if it was built with one.
    pub fn embedded() -> Option<Self> {
        SITE.as_ref().map(Self::new)
    }

    fn new(site: &'static Site) -> Self {
        let mut by_path = HashMap::new();
        for file in site.files {
            by_path.insert(
                file.path.to_owned(),
                Entry {
                    file,
                    cache: REVALIDATE,
                },
            );
            if let Some(hashed) = hashed_name(site, file.path) {
                by_path.insert(
                    hashed,
                    Entry {
                        file,
                        cache: IMMUTABLE,
                    },
                );
            }
        }
        Self { site, by_path }
    }

    /// The name pages use for the app's files: `tether.<hash>`, so they link to
    /// `pkg/tether.<hash>.js` and `.wasm` and `.css`.
    pub fn output_name(&self) -> String {
        format!("{}.{}", self.site.output_name, self.site.build_hash)
    }

    pub fn build_hash(&self) -> &'static str {
        self.site.build_hash
    }

    /// The answer for a request to `path` (as in the URI, with its leading `/`), or `None`
    /// when no embedded file has that name.
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let entry = self.by_path.get(path.strip_prefix('/')?)?;
        let (encoding, body) = choose(entry.file, headers.get(header::ACCEPT_ENCODING));
        let etag = format!("\"{}{}\"", entry.file.tag, encoding.tag_suffix());
        let mut response = Response::builder()
            .header(header::CACHE_CONTROL, entry.cache)
            .header(header::ETAG, &etag)
            .header(header::VARY, "Accept-Encoding");
        if matches_etag(headers.get(header::IF_NONE_MATCH), &etag) {
            return response
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .ok();
        }
        response = response
            .header(header::CONTENT_TYPE, content_type(entry.file.path))
            .header(header::CONTENT_LENGTH, body.len());
        if let Some(coding) = encoding.header() {
            response = response.header(header::CONTENT_ENCODING, coding);
        }
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        };
        response.status(StatusCode::OK).body(body).ok()
    }
}

/// What this binary is, for `tether --version` (`long`) and `-V`: its version, the commit it
/// was built from, and whether it carries the site.
pub fn version(long: bool) -> &'static str {
    static SHORT: OnceLock<String> = OnceLock::new();
    static LONG: OnceLock<String> = OnceLock::new();
    let commit = option_env!("TETHER_BUILD_COMMIT").filter(|c| !c.is_empty());
    if !long {
        return SHORT.get_or_init(|| match commit {
            Some(commit) => format!("{} ({commit})", env!("CARGO_PKG_VERSION")),
            None => env!("CARGO_PKG_VERSION").to_owned(),
        });
    }
    LONG.get_or_init(|| {
        let site = match &SITE {
            Some(site) => format!(
                "embedded: {} files, build {}, precompressed (br, gzip)",
                site.files.len(),
                site.build_hash
            ),
            None => "not embedded: served from --site-root (default target/site)".to_owned(),
        };
        format!(
            "{}\ncommit: {}\nsite: {site}\nprofile: {}",
            env!("CARGO_PKG_VERSION"),
            commit.unwrap_or("unknown"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        )
    })
}

/// `pkg/tether.wasm` → `pkg/tether.<hash>.wasm`, for the app's own files only.
fn hashed_name(site: &Site, path: &str) -> Option<String> {
    let name = path.strip_prefix("pkg/")?;
    let (stem, ext) = name.rsplit_once('.')?;
    (stem == site.output_name && matches!(ext, "js" | "wasm" | "css"))
        .then(|| format!("pkg/{stem}.{}.{ext}", site.build_hash))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }

    /// Each representation has its own strong validator.
    fn tag_suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => "-br",
            Encoding::Gzip => "-gz",
            Encoding::Identity => "",
        }
    }
}

/// The smallest form of `file` the client accepts. Preferences among accepted codings (`q`
/// above 0) are not weighed: every browser decodes both, and fewer bytes is what they are for.
fn choose(file: &EmbeddedFile, accept: Option<&HeaderValue>) -> (Encoding, &'static [u8]) {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    let candidates = [
        (Encoding::Brotli, file.br),
        (Encoding::Gzip, file.gzip),
        (Encoding::Identity, Some(file.identity)),
    ];
    candidates
        .into_iter()
        .filter_map(|(encoding, body)| Some((encoding, body?)))
        .filter(|(encoding, _)| quality(accept, *encoding) > 0.0)
        .min_by_key(|(_, body)| body.len())
        // Nothing acceptable (`identity;q=0` and no coding we have): the file as it is, which
        // every client can read, rather than a 406.
        .unwrap_or((Encoding::Identity, file.identity))
}

/// The `q` the `Accept-Encoding` value gives `encoding` (RFC 9110 §12.5.3): its own entry,
/// else `*`'s, else 0 — except identity, acceptable unless refused.
fn quality(accept: &str, encoding: Encoding) -> f32 {
    let name = match encoding {
        Encoding::Brotli => "br",
        Encoding::Gzip => "gzip",
        Encoding::Identity => "identity",
    };
    let mut own = None;
    let mut any = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case(name)
            || (name == "gzip" && coding.eq_ignore_ascii_case("x-gzip"))
        {
            own = Some(q);
        } else if coding == "*" {
            any = Some(q);
        }
    }
    own.or(any).unwrap_or(if encoding == Encoding::Identity {
        1.0
    } else {
        0.0
    })
}

fn matches_etag(if_none_match: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: EmbeddedFile = EmbeddedFile {
        path: "pkg/app.wasm",
        tag: "0123456789abcdef",
        identity: b"0123456789",
        br: Some(b"012"),
        gzip: Some(b"01234"),
    };
    const ICON: EmbeddedFile = EmbeddedFile {
        path: "favicon.svg",
        tag: "fedcba9876543210",
        identity: b"<svg/>",
        br: Some(b"<svg/>..."),
        gzip: None,
    };
    static SITE: Site = Site {
        build_hash: "aaaabbbbccccdddd",
        output_name: "app",
        files: &[WASM, ICON],
    };

    fn get(assets: &Assets, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        assets.respond(&Method::GET, path, &map)
    }

    fn value(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn the_best_accepted_encoding_is_served() {
        let accept = |v: &str| choose(&WASM, Some(&HeaderValue::from_str(v).unwrap())).0;
        assert_eq!(accept("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(accept("gzip"), Encoding::Gzip);
        assert_eq!(accept("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(
            accept("br;q=0.5, gzip;q=0.9"),
            Encoding::Brotli,
            "any q above 0 accepts"
        );
        assert_eq!(accept("gzip, br;q=0"), Encoding::Gzip);
        assert_eq!(accept("*"), Encoding::Brotli);
        assert_eq!(accept("deflate"), Encoding::Identity);
        assert_eq!(accept(""), Encoding::Identity);
        assert_eq!(choose(&WASM, None).0, Encoding::Identity);
        // Refusing everything still gets the file itself rather than nothing.
        assert_eq!(accept("identity;q=0"), Encoding::Identity);
        // A compressed form larger than the file itself is not sent.
        let icon = choose(&ICON, Some(&HeaderValue::from_static("br, gzip"))).0;
        assert_eq!(icon, Encoding::Identity);
        let icon = choose(&ICON, Some(&HeaderValue::from_static("br, identity;q=0"))).0;
        assert_eq!(icon, Encoding::Brotli);
    }

    #[test]
    fn hashed_names_are_immutable_and_stable_names_revalidate() {
        let assets = Assets::new(&SITE);
        assert_eq!(assets.output_name(), "app.aaaabbbbccccdddd");
        let hashed = get(
            &assets,
            "/pkg/app.aaaabbbbccccdddd.wasm",
            &[("accept-encoding", "br")],
        )
        .unwrap();
        assert_eq!(value(&hashed, header::CACHE_CONTROL), Some(IMMUTABLE));
        assert_eq!(value(&hashed, header::CONTENT_ENCODING), Some("br"));
        assert_eq!(
            value(&hashed, header::CONTENT_TYPE),
            Some("application/wasm")
        );
        assert_eq!(value(&hashed, header::CONTENT_LENGTH), Some("3"));
        assert_eq!(value(&hashed, header::VARY), Some("Accept-Encoding"));
        let plain = get(&assets, "/pkg/app.wasm", &[]).unwrap();
        assert_eq!(value(&plain, header::CACHE_CONTROL), Some(REVALIDATE));
        assert_eq!(value(&plain, header::CONTENT_ENCODING), None);
        assert_eq!(value(&plain, header::CONTENT_LENGTH), Some("10"));
        // Only the app's own files get a hashed name; other names are not invented.
        assert!(get(&assets, "/favicon.aaaabbbbccccdddd.svg", &[]).is_none());
        assert!(get(&assets, "/pkg/app.0000000000000000.wasm", &[]).is_none());
        assert!(get(&assets, "/pkg/../favicon.svg", &[]).is_none());
        assert!(get(&assets, "/", &[]).is_none());
    }

    #[test]
    fn a_matching_etag_gets_304_for_its_own_encoding_only() {
        let assets = Assets::new(&SITE);
        let first = get(&assets, "/pkg/app.wasm", &[("accept-encoding", "gzip")]).unwrap();
        let etag = value(&first, header::ETAG).unwrap().to_owned();
        let again = get(
            &assets,
            "/pkg/app.wasm",
            &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        )
        .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(value(&again, header::ETAG), Some(etag.as_str()));
        let other = get(
            &assets,
            "/pkg/app.wasm",
            &[("accept-encoding", "br"), ("if-none-match", &etag)],
        )
        .unwrap();
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "the br form has another tag"
        );
    }

    #[test]
    fn only_reads_are_answered() {
        let assets = Assets::new(&SITE);
        let head = assets
            .respond(&Method::HEAD, "/favicon.svg", &HeaderMap::new())
            .unwrap();
        assert_eq!(value(&head, header::CONTENT_LENGTH), Some("6"));
        assert!(assets
            .respond(&Method::POST, "/favicon.svg", &HeaderMap::new())
            .is_none());
    }
}
