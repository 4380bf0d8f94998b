//! The web console's files, built from `web/` by this crate's build script
//! and compiled into the binary: a release `neptune` serves the console with
//! no Node.js and no files beside it.
//!
//! Every file comes with its gzip and Brotli forms (compressed once, at
//! build time, at the best levels) and an ETag of its content. Files under
//! `assets/` carry a content hash in their names, so they may be cached for
//! good; `index.html` names them and must be revalidated.

/// One file of the console.
#[derive(Debug)]
pub struct Asset {
    /// Relative to the console's root, e.g. `index.html`, `assets/app-HASH.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong ETag (quoted), from a hash of `body`.
    pub etag: &'static str,
    /// Its name changes whenever its content does.
    pub immutable: bool,
    pub body: &'static [u8],
    pub gzip: &'static [u8],
    pub brotli: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The file at `path` (relative, no leading `/`), if the console has one.
pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The page every client-side URL of the console answers with.
pub fn index() -> Option<&'static Asset> {
    get("index.html")
}

/// Every file, for tests and benchmarks.
pub fn all() -> &'static [Asset] {
    ASSETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_files_that_exist() {
        let page = index().expect("index.html is built");
        let html = std::str::from_utf8(page.body).expect("utf-8");
        let mut named = 0;
        for part in html.split("/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            let asset = get(&format!("assets/{name}"));
            assert!(asset.is_some_and(|a| a.immutable), "{name} is not built");
            named += 1;
        }
        assert!(
            named >= 2,
            "the page loads a script and a stylesheet: {html}"
        );
        assert!(!html.contains("<script>"), "no inline script: {html}");
    }

    #[test]
    fn compressed_forms_are_smaller_and_etags_differ() {
        let script = all()
            .iter()
            .find(|a| a.path.ends_with(".js"))
            .expect("a script is built");
        assert!(script.gzip.len() < script.body.len() / 2);
        assert!(script.brotli.len() < script.body.len() / 2);
        assert_eq!(&script.gzip[..2], &[0x1f, 0x8b], "gzip magic");
        // The Manager puts these in headers as they are: they must be valid there.
        for asset in all() {
            let hex = asset.etag.trim_matches('"');
            assert_eq!(asset.etag.len(), hex.len() + 2, "{}", asset.etag);
            assert!(hex.len() == 20 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(asset
                .content_type
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' '));
        }
        let mut etags: Vec<_> = all().iter().map(|a| a.etag).collect();
        etags.sort_unstable();
        etags.dedup();
        assert_eq!(etags.len(), all().len());
    }
}
