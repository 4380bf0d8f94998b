//! The OpenAPI document checked in matches the code.

use super::*;

#[test]
fn openapi_document_is_checked_in() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/neptune.json");
    let generated = serde_json::to_string_pretty(&neptune_manager::openapi()).unwrap() + "\n";
    if std::env::var_os("NEPTUNE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/neptune.json is out of date: rerun with NEPTUNE_UPDATE_GOLDEN=1 and commit it"
    );
}
