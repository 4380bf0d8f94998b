//! Builds the web console from `web/` (npm + esbuild) into `OUT_DIR` and
//! generates the table of files that `src/lib.rs` embeds.
//!
//! `npm ci` runs only when `web/node_modules` is missing or older than the
//! lockfile; the bundle is rebuilt only when a file under `web/src`, the
//! lockfile or the build script changes, so ordinary Rust rebuilds of the
//! workspace never touch Node. The Manager crate does not depend on Node at
//! all: only this crate's build does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const INSTALL_HINT: &str = "the Neptune web console is built with Node.js (20 or later) and npm. \
Install them, then build again: on Debian 12 or Ubuntu `sudo apt-get install nodejs npm`; \
elsewhere see https://nodejs.org/en/download (docs/console.md)";

fn main() {
    if let Err(message) = run() {
        // `cargo::error` fails the build and shows the message as written
        // (a panic would print it escaped, inside a backtrace notice).
        for line in message.lines() {
            println!("cargo::error={line}");
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let web = manifest_dir.join("../../web");
    let web = web
        .canonicalize()
        .map_err(|e| format!("the console's sources {}: {e}", web.display()))?;
    let out = PathBuf::from(env("OUT_DIR")?).join("console");

    for input in ["package.json", "package-lock.json", "build.mjs", "src"] {
        println!("cargo::rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo::rerun-if-env-changed=NEPTUNE_NPM");
    println!("cargo::rerun-if-env-changed=NEPTUNE_NODE");

    let npm = std::env::var("NEPTUNE_NPM").unwrap_or_else(|_| "npm".to_owned());
    let node = std::env::var("NEPTUNE_NODE").unwrap_or_else(|_| "node".to_owned());
    if needs_install(&web) {
        run_tool(
            Command::new(&npm)
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&web),
            &npm,
        )?;
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    run_tool(
        Command::new(&node)
            .arg("build.mjs")
            .arg("--outdir")
            .arg(&out)
            .current_dir(&web),
        &node,
    )?;
    let table = generate(&out)?;
    let generated = PathBuf::from(env("OUT_DIR")?).join("assets.rs");
    std::fs::write(&generated, table).map_err(|e| format!("{}: {e}", generated.display()))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (is this run by cargo?)"))
}

/// `node_modules` is stale when npm's own record of the last install is
/// missing or older than the lockfile.
fn needs_install(web: &Path) -> bool {
    let modified = |p: PathBuf| -> Option<SystemTime> { p.metadata().ok()?.modified().ok() };
    match (
        modified(web.join("node_modules/.package-lock.json")),
        modified(web.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

fn run_tool(command: &mut Command, name: &str) -> Result<(), String> {
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "`{name}` failed ({status}) while building the web console"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("`{name}` was not found: {INSTALL_HINT}"))
        }
        Err(e) => Err(format!("running `{name}`: {e}")),
    }
}

/// Rust source of the table of built files, from `build.mjs`'s manifest:
/// one line per file, `path TAB content-type TAB etag TAB immutable`, each
/// with `FILE.gz` and `FILE.br` beside it.
fn generate(out: &Path) -> Result<String, String> {
    let manifest = out.join("manifest.tsv");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    let mut rust = String::from("static ASSETS: &[Asset] = &[\n");
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [path, content_type, etag, immutable] = fields[..] else {
            return Err(format!("{}: malformed line {line:?}", manifest.display()));
        };
        let file = out.join(path);
        let _ = writeln!(
            rust,
            "    Asset {{ path: {path:?}, content_type: {content_type:?}, etag: {etag:?}, \
             immutable: {immutable}, body: include_bytes!({body:?}), \
             gzip: include_bytes!({gz:?}), brotli: include_bytes!({br:?}) }},",
            body = file.display().to_string(),
            gz = format!("{}.gz", file.display()),
            br = format!("{}.br", file.display()),
        );
    }
    rust.push_str("];\n");
    Ok(rust)
}
