#!/usr/bin/env python3
"""ctypes bindings for the chat-room engine's C API (include/chat.h), and a demo.

Run as a script, it plays the same scenario as examples/c/demo.c and prints the same
transcript (examples/c/demo.expected) byte for byte:

    cargo build -p chat-ffi --release
    python3 examples/python/chat.py                      # finds target/release or target/debug
    python3 examples/python/chat.py --lib path/to/libchat_ffi.so
    CHAT_FFI_LIB=path/to/libchat_ffi.so python3 examples/python/chat.py

The library is looked up in that order: --lib, then $CHAT_FFI_LIB, then target/release and
target/debug under the repository root. Python 3.10+ with only the standard library.

As a module (put examples/python on sys.path):

    import chat

    lib = chat.load_library()                  # same search, minus --lib
    with chat.Room(chat.config_seed(lib), seed=2026, lib=lib) as room:
        room.join(1, now_ms=0)
        room.join(2, now_ms=0, nick="bob")
        status = room.message(1, now_ms=10, text="hi")   # Status.OK, or the rule it broke
        for out in room.outputs():             # drain after every input
            for conn in (1, 2):
                if out.receives(conn):
                    print(conn, out.line)

Errors: calls that can only fail through a caller mistake or a bug (unknown connection,
duplicate connection, a panic caught at the boundary, ...) raise ChatError. Room.message()
instead returns the Status of a refused input (rate limited, control character, invalid
UTF-8, ...), because refusals are normal traffic; the room also queues an error line for
the sender (except for invalid UTF-8).

Threads: like the C API, a Room is not locked; use each one from one thread at a time.
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char,
    c_char_p,
    c_size_t,
    c_uint32,
    c_uint64,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

__all__ = [
    "CHAT_MAX_NICK_LEN",
    "Audience",
    "ChatConfig",
    "ChatError",
    "ChatOutput",
    "ChatStr",
    "LibraryError",
    "Output",
    "OutputKind",
    "PROTOTYPES",
    "REFUSALS",
    "Room",
    "Status",
    "config_default",
    "config_seed",
    "find_library",
    "load_library",
    "status_str",
    "version",
]

# --- chat.h, transcribed ------------------------------------------------------------------

CHAT_MAX_NICK_LEN = 32

# The header's enums are uint32_t typedefs, not C enums, so the ABI type is fixed.
chat_status = c_uint32
chat_audience = c_uint32
chat_output_kind = c_uint32


class Status(enum.IntEnum):
    """enum chat_status; the numbers never change meaning."""

    OK = 0
    NO_OUTPUT = 1
    NULL_PARAMETER = 2
    INVALID_UTF8 = 3
    TOO_LONG = 4
    UNKNOWN_CONN = 5
    DUPLICATE_CONN = 6
    RATE_LIMITED = 7
    INSUFFICIENT_SIZE = 8
    PANIC = 9
    INVALID_CONFIG = 10
    ROOM_FULL = 11
    EMPTY_MESSAGE = 12
    CONTROL_CHARACTER = 13
    INVALID_NICK = 14
    NICK_TAKEN = 15
    NICK_UNCHANGED = 16
    UNKNOWN_COMMAND = 17
    MISSING_ARGUMENT = 18
    OUT_OF_RANGE = 19
    REFUSED = 20


class Audience(enum.IntEnum):
    """enum chat_audience."""

    EVERYONE = 0
    EVERYONE_EXCEPT = 1
    ONLY = 2


class OutputKind(enum.IntEnum):
    """enum chat_output_kind."""

    WELCOME = 0
    MESSAGE = 1
    ME = 2
    JOIN = 3
    LEAVE = 4
    NICK = 5
    WHO = 6
    HELP = 7
    ERROR = 8
    GAP = 9


# Statuses with which chat_room_message() turns down an input: the chat's rules at work,
# not a misuse of the API, so Room.message() returns them instead of raising.
REFUSALS = frozenset(
    {
        Status.INVALID_UTF8,
        Status.TOO_LONG,
        Status.RATE_LIMITED,
        Status.EMPTY_MESSAGE,
        Status.CONTROL_CHARACTER,
        Status.INVALID_NICK,
        Status.NICK_TAKEN,
        Status.NICK_UNCHANGED,
        Status.UNKNOWN_COMMAND,
        Status.MISSING_ARGUMENT,
        Status.REFUSED,
    }
)


class _ChatRoom(Structure):
    """struct chat_room: opaque, only ever handled through a pointer."""


_RoomPtr = POINTER(_ChatRoom)


class _Fields(Structure):
    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self._fields_)
        return f"{type(self).__name__}({fields})"


class ChatStr(_Fields):
    """struct chat_str: a borrowed view, `len` bytes at `ptr`, not NUL-terminated.

    `ptr` is POINTER(c_char), not c_char_p: c_char_p would read up to a NUL.
    """

    _fields_ = [
        ("ptr", POINTER(c_char)),
        ("len", c_size_t),
    ]

    def to_bytes(self) -> bytes:
        return ctypes.string_at(self.ptr, self.len) if self.len else b""


class ChatOutput(_Fields):
    """struct chat_output; its views die at the next call that mutates the room."""

    _fields_ = [
        ("audience", chat_audience),
        ("audience_conn", c_uint64),
        ("kind", chat_output_kind),
        ("seq", c_uint64),
        ("replay", c_bool),
        ("has_subject", c_bool),
        ("subject_conn", c_uint64),
        ("nick", ChatStr),
        ("old_nick", ChatStr),
        ("text", ChatStr),
        ("line", ChatStr),
        ("error", chat_status),
        ("lost", c_uint64),
        ("member_count", c_size_t),
    ]


class ChatConfig(_Fields):
    """struct chat_config; fill with config_default() or config_seed(), then edit."""

    _fields_ = [
        ("welcome", c_bool),
        ("join_notices", c_bool),
        ("commands", c_bool),
        ("history", c_size_t),
        ("max_message_bytes", c_size_t),
        ("rate_burst", c_uint32),
        ("rate_per_second", c_uint32),
        ("max_members", c_size_t),
    ]


# Every function in chat.h: name -> (restype, argtypes). Pointers the C side only reads
# and buffers of bytes are c_char_p (bytes pass without a copy); chat_room_nick() writes
# its buffer, so that one is POINTER(c_char) and takes a create_string_buffer().
PROTOTYPES = {
    "chat_room_poll_output": (chat_status, [_RoomPtr, POINTER(ChatOutput)]),
    "chat_room_output_member": (chat_status, [_RoomPtr, c_size_t, POINTER(ChatStr)]),
    "chat_config_default": (chat_status, [POINTER(ChatConfig)]),
    "chat_config_seed": (chat_status, [POINTER(ChatConfig)]),
    "chat_room_new": (chat_status, [POINTER(ChatConfig), c_uint64, POINTER(_RoomPtr)]),
    "chat_room_free": (None, [_RoomPtr]),
    "chat_room_join": (
        chat_status,
        [_RoomPtr, c_uint64, c_uint64, c_char_p, c_size_t, POINTER(c_uint64)],
    ),
    "chat_room_message": (chat_status, [_RoomPtr, c_uint64, c_uint64, c_char_p, c_size_t]),
    "chat_room_leave": (chat_status, [_RoomPtr, c_uint64, c_uint64]),
    "chat_room_nick": (
        chat_status,
        [_RoomPtr, c_uint64, POINTER(c_char), c_size_t, POINTER(c_size_t)],
    ),
    "chat_room_conn_of": (chat_status, [_RoomPtr, c_char_p, c_size_t, POINTER(c_uint64)]),
    "chat_room_is_member": (chat_status, [_RoomPtr, c_uint64, POINTER(c_bool)]),
    "chat_room_member_count": (chat_status, [_RoomPtr, POINTER(c_size_t)]),
    "chat_room_last_seq": (chat_status, [_RoomPtr, POINTER(c_uint64)]),
    "chat_version": (c_char_p, []),
    "chat_status_str": (c_char_p, [chat_status]),
}

# --- loading --------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
LIB_NAME = {"darwin": "libchat_ffi.dylib", "win32": "chat_ffi.dll"}.get(
    sys.platform, "libchat_ffi.so"
)


class LibraryError(OSError):
    """The shared library could not be found or loaded."""


def find_library(path: Union[str, os.PathLike, None] = None) -> Path:
    """The library to load: `path`, else $CHAT_FFI_LIB, else target/{release,debug}."""
    for given, origin in ((path, "--lib"), (os.environ.get("CHAT_FFI_LIB"), "CHAT_FFI_LIB")):
        if given:
            # An explicit choice that is wrong must not fall back to a stale build.
            if not Path(given).is_file():
                raise LibraryError(f"{origin} names {given}, which is not a file")
            return Path(given)
    candidates = [REPO_ROOT / "target" / profile / LIB_NAME for profile in ("release", "debug")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise LibraryError(
        f"cannot find {LIB_NAME} (tried {tried}); build it with "
        "`cargo build -p chat-ffi --release`, or pass --lib PATH or set CHAT_FFI_LIB"
    )


def load_library(path: Union[str, os.PathLike, None] = None) -> ctypes.CDLL:
    """Loads the library (see find_library) and declares every prototype of chat.h."""
    found = find_library(path)
    try:
        lib = ctypes.CDLL(str(found.resolve()))
    except OSError as e:
        raise LibraryError(f"cannot load {found}: {e}") from e
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise LibraryError(f"{found} lacks {name}; is it an older build?") from None
        function.restype = restype
        function.argtypes = argtypes
    return lib


_default_lib: Optional[ctypes.CDLL] = None


def _lib_or_default(lib: Optional[ctypes.CDLL]) -> ctypes.CDLL:
    global _default_lib
    if lib is not None:
        return lib
    if _default_lib is None:
        _default_lib = load_library()
    return _default_lib


# --- Pythonic layer -------------------------------------------------------------------------


def _enum(cls, number: int):
    """`number` as a member of `cls`, or the bare int if a newer library sent a new one."""
    try:
        return cls(number)
    except ValueError:
        return number


def status_str(status: int, lib: Optional[ctypes.CDLL] = None) -> str:
    """chat_status_str(): the library's English message for any status number."""
    return _lib_or_default(lib).chat_status_str(status).decode()


def version(lib: Optional[ctypes.CDLL] = None) -> str:
    """chat_version(): "MAJOR.MINOR.PATCH"."""
    return _lib_or_default(lib).chat_version().decode()


class ChatError(Exception):
    """A call returned a status the caller did not expect."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status: Union[Status, int] = _enum(Status, status)
        self.message = message

    def __str__(self) -> str:
        name = self.status.name if isinstance(self.status, Status) else f"status {self.status}"
        return f"{name}: {self.message}"


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != Status.OK:
        raise ChatError(status, lib.chat_status_str(status).decode())


def _config(lib: Optional[ctypes.CDLL], fill) -> ChatConfig:
    lib = _lib_or_default(lib)
    config = ChatConfig()
    _check(lib, fill(lib)(byref(config)))
    return config


def config_default(lib: Optional[ctypes.CDLL] = None) -> ChatConfig:
    """chat_config_default(): welcome, join notices, commands, history, limits."""
    return _config(lib, lambda lib: lib.chat_config_default)


def config_seed(lib: Optional[ctypes.CDLL] = None) -> ChatConfig:
    """chat_config_seed(): the tutorial's bare behaviour (limits stay on)."""
    return _config(lib, lambda lib: lib.chat_config_seed)


def _as_bytes(text: Union[str, bytes, bytearray, memoryview]) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, bytes):
        return text
    if isinstance(text, (bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"expected str or bytes, not {type(text).__name__}")


@dataclass(frozen=True)
class Output:
    """One polled output, copied out of the room (so it outlives the next call)."""

    audience: Union[Audience, int]
    audience_conn: int
    kind: Union[OutputKind, int]
    seq: int
    replay: bool
    subject_conn: Optional[int]  # None when the C struct's has_subject is false
    nick: str
    old_nick: str
    text: str
    line: str
    error: Union[Status, int]
    lost: int
    member_count: int
    members: tuple[str, ...]  # WELCOME and WHO: chat_room_output_member(), in nick order

    def receives(self, conn: int) -> bool:
        """Whether connection `conn`, a member now, is in the audience."""
        if self.audience == Audience.EVERYONE:
            return True
        if self.audience == Audience.EVERYONE_EXCEPT:
            return self.audience_conn != conn
        if self.audience == Audience.ONLY:
            return self.audience_conn == conn
        return False


class Room:
    """A chat room (chat_room_new / chat_room_free), usable as a context manager."""

    def __init__(
        self,
        config: Optional[ChatConfig] = None,
        seed: int = 0,
        *,
        lib: Optional[ctypes.CDLL] = None,
    ) -> None:
        self._handle = None  # first, so close() works however __init__ fails
        self._lib = _lib_or_default(lib)
        handle = _RoomPtr()
        config_ptr = None if config is None else byref(config)
        _check(self._lib, self._lib.chat_room_new(config_ptr, seed, byref(handle)))
        self._handle = handle

    def close(self) -> None:
        """Frees the room; later calls are no-ops. Other methods then raise ValueError."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.chat_room_free(handle)

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Room:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _room(self):
        if not self._handle:
            raise ValueError("operation on a closed Room")
        return self._handle

    def join(
        self,
        conn: int,
        now_ms: int,
        nick: Union[str, bytes, None] = None,
        resume_after: Optional[int] = None,
    ) -> None:
        """Connection `conn` joins; a bad or taken `nick` still joins, with a random one.

        Raises ChatError with DUPLICATE_CONN, ROOM_FULL or INVALID_UTF8 (the nick).
        """
        data = None if nick is None else _as_bytes(nick)
        resume = None if resume_after is None else byref(c_uint64(resume_after))
        status = self._lib.chat_room_join(
            self._room(), now_ms, conn, data, len(data) if data is not None else 0, resume
        )
        _check(self._lib, status)

    def message(
        self,
        conn: int,
        now_ms: int,
        text: Union[str, bytes, bytearray, memoryview],
        length: Optional[int] = None,
    ) -> Status:
        """Member `conn` sends `text` (str as UTF-8; bytes as they are, valid or not).

        `length` sends only the first `length` bytes, as C passes part of a buffer.
        Returns Status.OK or the refusal (see REFUSALS); raises ChatError otherwise,
        e.g. UNKNOWN_CONN.
        """
        data = _as_bytes(text)
        if length is None:
            length = len(data)
        elif not 0 <= length <= len(data):
            # The C side would trust it and read past the end of the buffer.
            raise ValueError(f"length {length} outside 0..{len(data)}")
        status = self._lib.chat_room_message(self._room(), now_ms, conn, data, length)
        if status in REFUSALS:
            return Status(status)
        _check(self._lib, status)
        return Status.OK

    def leave(self, conn: int, now_ms: int) -> None:
        """Member `conn` leaves; raises ChatError(UNKNOWN_CONN) for a non-member."""
        _check(self._lib, self._lib.chat_room_leave(self._room(), now_ms, conn))

    def nick(self, conn: int) -> str:
        """Member `conn`'s nickname."""
        buf = ctypes.create_string_buffer(CHAT_MAX_NICK_LEN + 1)
        length = c_size_t()
        status = self._lib.chat_room_nick(self._room(), conn, buf, len(buf), byref(length))
        _check(self._lib, status)
        return buf.raw[: length.value].decode()

    def conn_of(self, nick: Union[str, bytes]) -> Optional[int]:
        """The member holding `nick` (ignoring ASCII case), or None."""
        data = _as_bytes(nick)
        conn = c_uint64()
        status = self._lib.chat_room_conn_of(self._room(), data, len(data), byref(conn))
        if status == Status.UNKNOWN_CONN:
            return None
        _check(self._lib, status)
        return conn.value

    def is_member(self, conn: int) -> bool:
        found = c_bool()
        _check(self._lib, self._lib.chat_room_is_member(self._room(), conn, byref(found)))
        return found.value

    def member_count(self) -> int:
        count = c_size_t()
        _check(self._lib, self._lib.chat_room_member_count(self._room(), byref(count)))
        return count.value

    def last_seq(self) -> int:
        """The latest broadcast event's seq (0 before any): a client's resume_after."""
        seq = c_uint64()
        _check(self._lib, self._lib.chat_room_last_seq(self._room(), byref(seq)))
        return seq.value

    def outputs(self) -> Iterator[Output]:
        """Drains the queue (chat_room_poll_output), yielding copies.

        Call after every input. Stopping early leaves the rest queued for the next drain.
        """
        out = ChatOutput()
        while True:
            status = self._lib.chat_room_poll_output(self._room(), byref(out))
            if status == Status.NO_OUTPUT:
                return
            _check(self._lib, status)
            # Copy before yielding: the consumer may call join/message/leave, which would
            # leave `out`'s views dangling.
            yield self._copy(out)

    def _copy(self, out: ChatOutput) -> Output:
        members = ()
        if out.kind in (OutputKind.WELCOME, OutputKind.WHO):
            members = tuple(self._members())
        return Output(
            audience=_enum(Audience, out.audience),
            audience_conn=out.audience_conn,
            kind=_enum(OutputKind, out.kind),
            seq=out.seq,
            replay=out.replay,
            subject_conn=out.subject_conn if out.has_subject else None,
            nick=out.nick.to_bytes().decode(),
            old_nick=out.old_nick.to_bytes().decode(),
            text=out.text.to_bytes().decode(),
            line=out.line.to_bytes().decode(),
            error=_enum(Status, out.error),
            lost=out.lost,
            member_count=out.member_count,
            members=members,
        )

    def _members(self) -> Iterator[str]:
        view = ChatStr()
        index = 0
        while True:
            status = self._lib.chat_room_output_member(self._room(), index, byref(view))
            if status == Status.OUT_OF_RANGE:
                return
            _check(self._lib, status)
            yield view.to_bytes().decode()
            index += 1


# --- the demo: examples/c/demo.c in Python --------------------------------------------------

CONN_IDS = (1, 2, 3)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Play examples/c/demo.c's scenario through the ctypes bindings."
    )
    parser.add_argument("--lib", metavar="PATH", help="libchat_ffi shared library to load")
    args = parser.parse_args(argv)
    try:
        lib = load_library(args.lib)
    except LibraryError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

    # The transcript must match demo.expected byte for byte, whatever the locale says.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    try:
        return _demo(lib)
    except ChatError as e:
        # What demo.c's expect() does: say which call failed, exit 1.
        sys.exit(f"{parser.prog}: {e}")


def _demo(lib: ctypes.CDLL) -> int:
    nicks = [""] * len(CONN_IDS)
    present = [False] * len(CONN_IDS)

    def expect(status: int, wanted: Status, what: str) -> None:
        if status != wanted:
            sys.exit(f"{what}: {status_str(status, lib)} (wanted {status_str(wanted, lib)})")

    def deliver(room: Room) -> None:
        for out in room.outputs():
            for i, conn in enumerate(CONN_IDS):
                if present[i] and out.receives(conn):
                    print(f"  [{nicks[i]} sees] {out.line}")

    def say(room: Room, now_ms: int, who: int, text, shown: str, length=None) -> Status:
        print(f'{nicks[who]} types "{shown}"')
        return room.message(CONN_IDS[who], now_ms, text, length)

    with Room(config_seed(lib), 2026, lib=lib) as room:
        print("a room with the tutorial's rules, seed 2026")

        for i, conn in enumerate(CONN_IDS):
            room.join(conn, now_ms=i)
            nicks[i] = room.nick(conn)
            present[i] = True
            print(f"connection {conn} joins as {nicks[i]}")
            deliver(room)

        hello = "hello, everyone"
        expect(say(room, 1000, 0, hello, hello), Status.OK, "message")
        deliver(room)

        # Only the first 3 bytes of the buffer are sent.
        expect(say(room, 1500, 1, b"hi!XX", "hi!", length=3), Status.OK, "message")
        deliver(room)

        status = say(room, 2000, 2, "ring\a", "ring\\a")
        print(f"refused: {status_str(status, lib)}")
        expect(status, Status.CONTROL_CHARACTER, "control character")
        deliver(room)

        status = say(room, 2500, 2, b"caf\xe9", "caf\\xe9")
        print(f"refused: {status_str(status, lib)}")
        expect(status, Status.INVALID_UTF8, "invalid UTF-8")
        deliver(room)

        print(f"{nicks[1]} leaves")
        present[1] = False
        room.leave(CONN_IDS[1], now_ms=3000)
        deliver(room)

        bye = "bye for now"
        expect(say(room, 3500, 2, bye, bye), Status.OK, "message")
        deliver(room)

        print(f"{room.member_count()} members left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
