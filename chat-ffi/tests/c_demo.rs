//! Builds `examples/c/demo.c` against the static library, the shared library and the static
//! library under ASan+UBSan, runs each, and checks the transcript byte for byte.

mod common;

use common::{command, compile, repo_root, Link};

fn run_demo(link: Link) {
    let exe = compile("examples/c/demo.c", link);
    let out = command(&exe, link).output().expect("run demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo ({link:?}) failed with {}:\n{stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "demo ({link:?}) wrote to stderr:\n{stderr}"
    );
    let expected = std::fs::read_to_string(repo_root().join("examples/c/demo.expected"))
        .expect("read demo.expected");
    let got = String::from_utf8(out.stdout).expect("demo prints UTF-8");
    assert_eq!(got, expected, "demo ({link:?}) transcript differs");
}

#[test]
fn demo_linked_statically() {
    run_demo(Link::Static);
}

#[test]
fn demo_linked_dynamically() {
    run_demo(Link::Dynamic);
}

#[test]
fn demo_under_address_and_undefined_behaviour_sanitizers() {
    run_demo(Link::Sanitized);
}

/// The README's minimal program compiles cleanly and prints what README says.
#[test]
fn readme_minimal_program() {
    for link in Link::ALL {
        let exe = compile("examples/c/minimal.c", link);
        let out = command(&exe, link).output().expect("run minimal");
        assert!(
            out.status.success(),
            "minimal ({link:?}) failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"to only 1:  .... you are alice; nobody else is here yet. Type /help for commands."));
        assert_eq!(
            lines.last(),
            Some(&"to everyone 0: alice: hello"),
            "{stdout}"
        );
        assert_eq!(lines.len(), 6, "{stdout}");
    }
}
