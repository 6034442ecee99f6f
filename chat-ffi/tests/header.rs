//! `include/chat.h` is generated from this crate by cbindgen and committed; this test
//! regenerates it and fails on any difference. `CHAT_BLESS=1` rewrites the file instead.

use std::path::Path;

#[test]
fn committed_header_matches_the_crate() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../include/chat.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");

    if std::env::var_os("CHAT_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write include/chat.h");
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/chat.h is stale (first difference at line {}); regenerate it with \
             `CHAT_BLESS=1 cargo test -p chat-ffi --test header` and commit it",
            first + 1
        );
    }
}
