//! Embeds the built site in the `tether` binary, so the release artifact runs from anywhere.
//!
//! cargo-leptos builds the server with `LEPTOS_SITE_ROOT` (and `LEPTOS_OUTPUT_NAME`) set. In a
//! release build with `--precompress` it builds the whole site first (wasm, JS, CSS, assets)
//! and writes a `.br` and a `.gz` beside every file, and only then the server: that order is
//! what makes embedding safe, so the site is embedded exactly when it is complete and
//! precompressed (`pkg/<output>.wasm.br` exists). Any other build (`cargo test`, clippy, a
//! debug `cargo leptos build`, which builds the site and the server at the same time) embeds
//! nothing, and the server serves the site from `--site-root` on disk.
//!
//! Output: `$OUT_DIR/site.rs`, included by `src/assets.rs`, and `TETHER_BUILD_COMMIT` for
//! `tether --version`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LEPTOS_SITE_ROOT");
    println!("cargo:rerun-if-env-changed=LEPTOS_OUTPUT_NAME");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();

    let site = std::env::var("LEPTOS_SITE_ROOT").ok().map(|root| {
        let root = PathBuf::from(root);
        if root.is_absolute() {
            root
        } else {
            workspace.join(root)
        }
    });
    let output_name = std::env::var("LEPTOS_OUTPUT_NAME").unwrap_or_else(|_| "tether".into());
    let embedded = site.as_deref().filter(|root| {
        root.join("pkg")
            .join(format!("{output_name}.wasm.br"))
            .is_file()
    });

    let code = match embedded {
        Some(root) => {
            // The directory as a whole: cargo rescans it, so a rebuilt site rebuilds the server.
            println!("cargo:rerun-if-changed={}", root.display());
            commit_of(&workspace);
            site_source(root, &output_name, &out)
        }
        None => {
            if let Some(root) = &site {
                // A later precompressed build of this site must embed it.
                println!("cargo:rerun-if-changed={}", root.display());
            }
            println!("cargo:rustc-env=TETHER_BUILD_COMMIT=");
            "pub const SITE: Option<Site> = None;\n".to_owned()
        }
    };
    std::fs::write(out.join("site.rs"), code).expect("write site.rs");
}

/// The commit the artifact was built from (empty when git or the repository is absent).
fn commit_of(workspace: &Path) {
    let git = workspace.join(".git");
    println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed={}", git.join(reference).display());
            println!(
                "cargo:rerun-if-changed={}",
                git.join("packed-refs").display()
            );
        }
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=TETHER_BUILD_COMMIT={commit}");
}

/// Rust source for the site under `root`: every file with its precompressed forms, and the
/// hash that names the app's own files (`pkg/<output>.{js,wasm,css}`).
fn site_source(root: &Path, output_name: &str, out: &Path) -> String {
    let mut files = Vec::new();
    collect(root, root, &mut files);
    files.sort();

    // One hash for the app's build: its JS, wasm and CSS change together with every release.
    let mut build = Sha256::new();
    for ext in ["js", "wasm", "css"] {
        let path = root.join("pkg").join(format!("{output_name}.{ext}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        build.update(ext.as_bytes());
        build.update((bytes.len() as u64).to_le_bytes());
        build.update(&bytes);
    }
    let build_hash = &hex(&build.finalize())[..16];

    let mut code = String::from("pub const SITE: Option<Site> = Some(Site {\n");
    writeln!(code, "    build_hash: {build_hash:?},").unwrap();
    writeln!(code, "    output_name: {output_name:?},").unwrap();
    code.push_str("    files: &[\n");
    for relative in &files {
        let path = root.join(relative);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tag = &hex(&Sha256::digest(&bytes))[..16];
        let variant = |suffix: &str| {
            let variant = root.join(format!("{relative}.{suffix}"));
            if variant.is_file() {
                format!("Some(include_bytes!({:?}))", variant.display().to_string())
            } else {
                "None".to_owned()
            }
        };
        let gzip = match gzip_best(&bytes, relative, out) {
            Some(path) => format!("Some(include_bytes!({:?}))", path.display().to_string()),
            None => variant("gz"),
        };
        writeln!(
            code,
            "        EmbeddedFile {{ path: {relative:?}, tag: {tag:?}, identity: include_bytes!({:?}), br: {}, gzip: {} }},",
            path.display().to_string(),
            variant("br"),
            gzip,
        )
        .unwrap();
    }
    code.push_str("    ],\n});\n");
    code
}

/// The file gzipped at the best level, written under `out`: cargo-leptos' own `.gz` is 15 %
/// larger for the wasm (242 KB against 206 KB), and gzip is what a client without brotli gets.
fn gzip_best(bytes: &[u8], relative: &str, out: &Path) -> Option<PathBuf> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    let gzipped = encoder.finish().ok()?;
    let path = out.join("site").join(format!("{relative}.gz"));
    std::fs::create_dir_all(path.parent()?).ok()?;
    std::fs::write(&path, gzipped).ok()?;
    Some(path)
}

/// Every servable file under `dir`, relative to `root` with `/` separators: not the
/// precompressed copies (they ride along with their file) nor TypeScript declarations.
fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read site directory").path();
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".br") || name.ends_with(".gz") || name.ends_with(".d.ts") {
            continue;
        }
        let relative = path.strip_prefix(root).expect("under the root");
        let relative: Vec<_> = relative
            .components()
            .map(|c| c.as_os_str().to_str().expect("site file names are UTF-8"))
            .collect();
        files.push(relative.join("/"));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
