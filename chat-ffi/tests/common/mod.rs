//! Builds the C examples against the library cargo just built, and runs them.
//!
//! `cargo test` builds chat-ffi's staticlib and cdylib next to the test binaries
//! (`target/<profile>/deps/`), so the tests link exactly the code under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The native libraries a program linking `libchat_ffi.a` needs on Linux
/// (`rustc --print native-static-libs`).
pub const STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

/// Warnings the examples must compile cleanly under.
pub const WARNINGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// How a C program gets the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `libchat_ffi.a`, linked in.
    Static,
    /// `libchat_ffi.so`, found through `LD_LIBRARY_PATH`.
    Dynamic,
    /// `libchat_ffi.a`, with the C side built under AddressSanitizer (with LeakSanitizer)
    /// and UndefinedBehaviorSanitizer; any report fails the run.
    Sanitized,
}

impl Link {
    /// Every way, for tests that run a program each way.
    pub const ALL: [Link; 3] = [Link::Static, Link::Dynamic, Link::Sanitized];

    fn suffix(self) -> &'static str {
        match self {
            Link::Static => "static",
            Link::Dynamic => "dynamic",
            Link::Sanitized => "asan",
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("chat-ffi sits in the workspace root")
        .to_path_buf()
}

/// The directory holding the `libchat_ffi.{a,so}` cargo built for this test run.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe
        .parent()
        .expect("test binaries live in target/<profile>/deps");
    for lib in ["libchat_ffi.a", "libchat_ffi.so"] {
        assert!(
            deps.join(lib).exists(),
            "{lib} is missing from {}; cargo builds it with the tests",
            deps.display()
        );
    }
    deps.to_path_buf()
}

/// Compiles `source` (a path relative to the repository root) with the system C compiler
/// and returns the executable. Panics with the compiler's output if it fails.
pub fn compile(source: &str, link: Link) -> PathBuf {
    let root = repo_root();
    let libs = lib_dir();
    let stem = Path::new(source)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("source file name");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{stem}-{}", link.suffix()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(WARNINGS)
        .arg("-g")
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join(source))
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Static => {
            cmd.arg(libs.join("libchat_ffi.a")).args(STATIC_LIBS);
        }
        Link::Dynamic => {
            cmd.arg("-L").arg(&libs).arg("-lchat_ffi");
        }
        Link::Sanitized => {
            cmd.args([
                "-O1",
                "-fno-omit-frame-pointer",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
            ])
            .arg(libs.join("libchat_ffi.a"))
            .args(STATIC_LIBS);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "compiling {source} ({link:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A command that runs `exe` built with `link`: the shared library is found, and sanitizer
/// reports (including leaks) make the program exit non-zero.
pub fn command(exe: &Path, link: Link) -> Command {
    let mut cmd = Command::new(exe);
    if link == Link::Dynamic {
        cmd.env("LD_LIBRARY_PATH", lib_dir());
    }
    if link == Link::Sanitized {
        cmd.env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .env("LSAN_OPTIONS", "exitcode=87");
    }
    cmd
}
