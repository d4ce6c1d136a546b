//! The README's Rust block is examples/quickstart.rs from its `use` on.
#[test]
fn readme_shows_the_quickstart() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = match std::fs::read_to_string(dir.join("../../README.md")) {
        Ok(r) => r,
        Err(_) => return, // a copy of the crate outside the tree
    };
    let src = std::fs::read_to_string(dir.join("examples/quickstart.rs")).unwrap();
    let body = src[src.find("use std::time").unwrap()..].trim_end();
    assert!(
        readme.contains(&format!("```rust\n{}\n```", body)),
        "README.md's Rust example differs from examples/quickstart.rs"
    );
}
