//! Runs the Python ctypes bindings (`examples/python/chat.py`) against the `libchat_ffi.so`
//! cargo built for this test run: the demo must print `examples/c/demo.expected` byte for
//! byte, bad input must come back as statuses and `ChatError`s, and the ctypes declarations
//! must agree with `include/chat.h` and with the Rust layout of the structs.
//!
//! Needs `python3` on PATH (or `PYTHON` naming an interpreter); without it the tests fail
//! rather than skip, so a CI image that lost Python cannot pass unnoticed.

mod common;

use chat_ffi::{chat_config, chat_output, chat_str, CHAT_MAX_NICK_LEN};
use common::{lib_dir, repo_root};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read};
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Generous for a few hundred milliseconds of work; only a hang gets near it.
const DEADLINE: Duration = Duration::from_secs(60);

fn shared_library() -> PathBuf {
    lib_dir().join("libchat_ffi.so")
}

fn examples_dir() -> PathBuf {
    repo_root().join("examples/python")
}

/// Runs the interpreter with `args`, killing it if it outlives [`DEADLINE`].
fn run_python(args: &[OsString]) -> Output {
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    // -I: ignore PYTHON* variables and user site-packages; -B: leave no __pycache__ in the tree.
    let mut child = Command::new(&python)
        .args(["-I", "-B"])
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => panic!(
                "{} is not installed or not on PATH: the Python binding tests need Python 3 \
                 (CI installs it; set PYTHON to use another interpreter)",
                python.to_string_lossy()
            ),
            _ => panic!("cannot start {}: {e}", python.to_string_lossy()),
        });

    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).expect("read python output");
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python {args:?} still running after {DEADLINE:?}; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `snippet` with `python -c`, with `chat` importable and the library path as argv[1].
/// Returns its stdout after checking it exited cleanly and quietly.
fn run_snippet(snippet: &str) -> String {
    let prelude = "import sys\nsys.path.insert(0, sys.argv[2])\nimport chat\nLIB = sys.argv[1]\n";
    let out = run_python(&[
        "-c".into(),
        format!("{prelude}{snippet}").into(),
        shared_library().into(),
        examples_dir().into(),
    ]);
    successful_stdout(out, "python snippet")
}

fn successful_stdout(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed with {}:\n{stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "{what} wrote to stderr:\n{stderr}");
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{what} printed non-UTF-8: {e}"))
}

/// Panics unless `got == expected`, listing the lines that differ.
fn assert_same_text(got: &str, expected: &str, what: &str) {
    if got == expected {
        return;
    }
    let (got_lines, expected_lines): (Vec<_>, Vec<_>) =
        (got.lines().collect(), expected.lines().collect());
    let mut diff = String::new();
    for i in 0..got_lines.len().max(expected_lines.len()) {
        let (g, e) = (got_lines.get(i), expected_lines.get(i));
        if g != e {
            let show = |line: Option<&&str>| line.map_or("<missing>".into(), |l| format!("{l:?}"));
            let _ = writeln!(diff, "line {}:\n  - {}\n  + {}", i + 1, show(e), show(g));
        }
    }
    if diff.is_empty() {
        diff = "the lines agree; the line endings or final newline differ\n".into();
    }
    panic!("{what} differs (- expected, + got):\n{diff}\nwhole output:\n{got}");
}

#[test]
fn demo_prints_the_c_transcript() {
    let script = examples_dir().join("chat.py");
    let out = run_python(&[script.into(), "--lib".into(), shared_library().into()]);
    let got = successful_stdout(out, "chat.py");
    let expected = std::fs::read_to_string(repo_root().join("examples/c/demo.expected"))
        .expect("read demo.expected");
    assert_same_text(&got, &expected, "chat.py's transcript");
}

#[test]
fn bad_input_comes_back_as_statuses_and_errors() {
    let got = run_snippet(
        r#"
import ctypes
lib = chat.load_library(LIB)

# Raw calls: the declared prototypes let None through as NULL.
print("new with NULL out:", chat.Status(lib.chat_room_new(None, 2026, None)).name)
print("status 9999:", lib.chat_status_str(9999))
print("free NULL:", lib.chat_room_free(None))

with chat.Room(chat.config_seed(lib), 2026, lib=lib) as room:
    room.join(1, 0)
    for attempt in (
        lambda: room.message(99, 10, "hi"),
        lambda: room.join(1, 20),
        lambda: room.leave(99, 30),
    ):
        try:
            attempt()
        except chat.ChatError as e:
            # The message is the library's own wording, whatever it is today.
            same = e.message == chat.status_str(e.status, lib)
            print("ChatError:", e.status.name, "message from chat_status_str:", same)

    # Refusals are results, not exceptions.
    print("empty:", room.message(1, 40, "   ").name)
    print("invalid UTF-8:", room.message(1, 50, b"\xff").name)
    try:
        room.message(1, 60, b"abc", length=4)
    except ValueError as e:
        print("ValueError:", e)

    small = ctypes.create_string_buffer(2)
    used = ctypes.c_size_t(12345)
    status = lib.chat_room_nick(room._room(), 1, small, len(small), ctypes.byref(used))
    print("nick into 2 bytes:", chat.Status(status).name, "len untouched:", used.value)

print("unknown number:", chat.ChatError(9999, "x"))
room.close()
try:
    room.member_count()
except ValueError as e:
    print("ValueError:", e)
"#,
    );
    let expected = "\
new with NULL out: NULL_PARAMETER
status 9999: b'unknown status'
free NULL: None
ChatError: UNKNOWN_CONN message from chat_status_str: True
ChatError: DUPLICATE_CONN message from chat_status_str: True
ChatError: UNKNOWN_CONN message from chat_status_str: True
empty: EMPTY_MESSAGE
invalid UTF-8: INVALID_UTF8
ValueError: length 4 outside 0..3
nick into 2 bytes: INSUFFICIENT_SIZE len untouched: 12345
unknown number: status 9999: x
ValueError: operation on a closed Room
";
    assert_same_text(&got, expected, "the bad-input snippet's output");
}

/// Prints each declared function as `ret name(arg, ...)` and each constant as `NAME = N`,
/// spelling ctypes types the way the ABI sees them: integers by width and signedness
/// (ctypes cannot tell size_t from uint64_t on LP64, and neither can the ABI).
const DESCRIBE_DECLARATIONS: &str = r#"
import ctypes
lib = chat.load_library(LIB)
STRUCTS = {chat._ChatRoom: "chat_room", chat.ChatOutput: "chat_output",
           chat.ChatStr: "chat_str", chat.ChatConfig: "chat_config"}

def c_abi(t):
    if t is None:
        return "void"
    if t is ctypes.c_char_p:
        return "char *"
    if issubclass(t, ctypes._Pointer):
        inner = c_abi(t._type_)
        return inner + ("*" if inner.endswith("*") else " *")
    if t in STRUCTS:
        return STRUCTS[t]
    if t._type_ == "c":
        return "char"
    if t._type_ == "?":
        return "bool"
    sign = "u" if t._type_ in "BHILQ" else "i"
    return f"{sign}{8 * ctypes.sizeof(t)}"

for name in sorted(chat.PROTOTYPES):
    f = getattr(lib, name)
    args = ", ".join(c_abi(a) for a in f.argtypes)
    print(f"{c_abi(f.restype)} {name}({args})")
print(f"CHAT_MAX_NICK_LEN = {chat.CHAT_MAX_NICK_LEN}")
for prefix, enum in (("STATUS", chat.Status), ("AUDIENCE", chat.Audience),
                     ("OUTPUT_KIND", chat.OutputKind)):
    for member in enum:
        print(f"CHAT_{prefix}_{member.name} = {member.value}")
"#;

/// A C type from chat.h in the spelling DESCRIBE_DECLARATIONS uses.
fn abi_type(c_type: &str) -> String {
    c_type
        .split_whitespace()
        .filter(|word| !matches!(*word, "const" | "struct"))
        .map(|word| match word {
            "uint64_t" => "u64".to_string(),
            "uint32_t" | "chat_status" => "u32".to_string(),
            "size_t" => format!("u{}", usize::BITS),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a C declaration like `const char *name` into its type and its name.
fn split_declaration(declaration: &str) -> (&str, &str) {
    let declaration = declaration.trim();
    let name_start = declaration
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    (&declaration[..name_start], &declaration[name_start..])
}

/// What DESCRIBE_DECLARATIONS should print, read from chat.h.
fn header_declarations(header: &str) -> String {
    let mut prototypes = Vec::new();
    let mut lines = header.lines();
    while let Some(line) = lines.next() {
        // Prototypes start in column 0 (comments, members and enumerators are indented).
        if !line.starts_with(|c: char| c.is_ascii_alphabetic()) || !line.contains('(') {
            continue;
        }
        let mut prototype = line.to_string();
        while !prototype.contains(';') {
            prototype.push(' ');
            prototype.push_str(lines.next().expect("prototype ends with ;"));
        }
        let (head, rest) = prototype.split_once('(').expect("prototype has (");
        let params = &rest[..rest.rfind(')').expect("prototype has )")];
        let (ret, name) = split_declaration(head);
        let args = if params.trim() == "void" {
            Vec::new()
        } else {
            params
                .split(',')
                .map(|param| abi_type(split_declaration(param).0))
                .collect()
        };
        let line = format!("{} {name}({})", abi_type(ret), args.join(", "));
        prototypes.push((name.to_string(), line));
    }
    assert!(prototypes.len() > 10, "found only {prototypes:?} in chat.h");
    // By name, as the snippet prints them.
    prototypes.sort();

    let mut text = String::new();
    for (_, line) in &prototypes {
        let _ = writeln!(text, "{line}");
    }
    let _ = writeln!(text, "CHAT_MAX_NICK_LEN = {CHAT_MAX_NICK_LEN}");
    assert!(header.contains(&format!("#define CHAT_MAX_NICK_LEN {CHAT_MAX_NICK_LEN}\n")));
    for line in header.lines().map(str::trim) {
        if let Some(enumerator) = line.strip_prefix("CHAT_").and_then(|l| l.strip_suffix(',')) {
            let _ = writeln!(text, "CHAT_{enumerator}");
        }
    }
    text
}

#[test]
fn ctypes_prototypes_and_constants_match_chat_h() {
    let header = std::fs::read_to_string(repo_root().join("include/chat.h")).expect("read chat.h");
    let got = run_snippet(DESCRIBE_DECLARATIONS);
    assert_same_text(
        &got,
        &header_declarations(&header),
        "the ctypes declarations (as the ABI sees them)",
    );
}

/// The size of a field, named by a closure that borrows it.
fn field_size<S, F>(_: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// Writes `struct size N` and `struct field offset size` lines for a `#[repr(C)]` struct.
macro_rules! describe_layout {
    ($text:ident, $ty:ident { $($field:ident),* $(,)? }) => {{
        let _ = writeln!($text, "{} size {}", stringify!($ty), size_of::<$ty>());
        $(
            let _ = writeln!(
                $text,
                "{} {} {} {}",
                stringify!($ty),
                stringify!($field),
                offset_of!($ty, $field),
                field_size(|s: &$ty| &s.$field),
            );
        )*
    }};
}

#[test]
fn ctypes_structures_match_the_rust_layout() {
    let got = run_snippet(
        r#"
import ctypes
for name, cls in (("chat_str", chat.ChatStr), ("chat_output", chat.ChatOutput),
                  ("chat_config", chat.ChatConfig)):
    print(f"{name} size {ctypes.sizeof(cls)}")
    for field, _ in cls._fields_:
        descriptor = getattr(cls, field)
        print(f"{name} {field} {descriptor.offset} {descriptor.size}")
"#,
    );
    let mut expected = String::new();
    describe_layout!(expected, chat_str { ptr, len });
    describe_layout!(
        expected,
        chat_output {
            audience,
            audience_conn,
            kind,
            seq,
            replay,
            has_subject,
            subject_conn,
            nick,
            old_nick,
            text,
            line,
            error,
            lost,
            member_count,
        }
    );
    describe_layout!(
        expected,
        chat_config {
            welcome,
            join_notices,
            commands,
            history,
            max_message_bytes,
            rate_burst,
            rate_per_second,
            max_members,
        }
    );
    assert_same_text(&got, &expected, "the ctypes struct layouts");
}
