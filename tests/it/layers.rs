//! The layers of src/ depend one way: a module of one layer names no module of a layer above it.
//! A regression here is an import that makes the folder tree lie about the architecture.

use std::path::{Path, PathBuf};

/// The layers, lowest first. `demo` writes generated runs through `store`, and only the server
/// (for `serve --demo`) and the command line use it.
const LAYERS: &[&str] = &[
    "model", "ingest", "store", "demo", "http", "surfaces", "server", "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module a source text names through `crate::`, alone (`crate::store::db`)
/// or in a group (`crate::{store, http}`).
fn crate_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                names.push(name.to_owned());
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..end].to_owned());
        }
    }
    names
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let dir = src.join(layer);
        assert!(dir.is_dir(), "src/{layer}/ is missing");
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for name in crate_modules(&text) {
                if let Some(higher) = LAYERS[rank + 1..].iter().find(|l| **l == name) {
                    let shown = file.strip_prefix(&src).unwrap_or(&file).display();
                    wrong.push(format!("src/{shown} ({layer}) imports crate::{higher}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_both_import_forms() {
    assert_eq!(
        crate_modules("use crate::store::db;\nuse crate::{http, surfaces::App};"),
        ["store", "http", "surfaces"]
    );
}
