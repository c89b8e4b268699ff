//! The shape the code promises (README "Architecture"): the pure core imports no I/O and none
//! of its three parts reaches into another. Read from the sources, so a change that breaks the
//! shape fails here rather than in review.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

use std::path::{Path, PathBuf};

/// The pure parts and the siblings each must not import.
const CORE: [(&str, &[&str]); 3] = [
    (
        "request",
        &[
            "crate::render",
            "crate::auth",
            "crate::proxy",
            "crate::jwks",
        ],
    ),
    (
        "render",
        &[
            "crate::request",
            "crate::auth",
            "crate::proxy",
            "crate::jwks",
        ],
    ),
    (
        "auth",
        &[
            "crate::request",
            "crate::render",
            "crate::proxy",
            "crate::jwks",
            "crate::error",
        ],
    ),
];

/// Crates that mean I/O or a runtime.
const SHELL_CRATES: [&str; 5] = ["pingora", "tokio", "reqwest", "hyper", "crate::demo"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The non-test code of a file: everything before its `#[cfg(test)]` module.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_pure_core_imports_no_io_and_no_sibling() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (part, siblings) in CORE {
        for file in rust_files(&src.join(part)) {
            let code = production_code(&file);
            for forbidden in SHELL_CRATES.iter().chain(siblings.iter()) {
                let used = code.contains(&format!("{forbidden}::"))
                    || code.contains(&format!("use {forbidden};"));
                assert!(!used, "{} uses {forbidden}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} core files found");
}

#[test]
fn media_types_and_routes_are_core_too() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in ["media.rs", "route.rs", "xml_names.rs"] {
        let code = production_code(&src.join(file));
        for forbidden in SHELL_CRATES.iter().chain(
            [
                "crate::request",
                "crate::render",
                "crate::auth",
                "crate::proxy",
            ]
            .iter(),
        ) {
            assert!(
                !code.contains(&format!("{forbidden}::")),
                "{file} uses {forbidden}"
            );
        }
    }
}
