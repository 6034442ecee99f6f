//! The C ABI of the chat-room engine: [`chat_core::Room`] behind an opaque handle.
//!
//! C programs include `include/chat.h` (generated from this crate by cbindgen) and link
//! `libchat_ffi.a` or `libchat_ffi.so`. The conventions follow rustls-ffi:
//!
//! - every fallible function returns a [`chat_status`]; output parameters are written only on
//!   [`chat_status::Ok`]; [`chat_status_str`] turns any number into a static message;
//! - a `const` pointer parameter is only read; a buffer is followed by its length; NULL is a
//!   [`chat_status::NullParameter`], never undefined behaviour;
//! - [`chat_room_new`] / [`chat_room_free`], and `chat_room_free(NULL)` is fine;
//! - every exported body runs inside [`ffi_panic_boundary!`], so no panic unwinds into C.
//!
//! Outputs are drained with [`chat_room_poll_output`] into a caller-owned [`chat_output`]
//! whose string views borrow from the room until the next call that takes the room mutably.

// The exported functions are called from C, where `unsafe fn` means nothing; their pointer
// contracts are in the header, and every dereference is checked for NULL first.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
// Every `unsafe` block says why it is sound; clippy enforces it.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs)]

mod boundary;
mod output;
mod room;
mod status;

pub use output::{
    chat_audience, chat_output, chat_output_kind, chat_room_output_member, chat_room_poll_output,
    chat_str,
};
pub use room::{
    chat_config, chat_config_default, chat_config_seed, chat_room, chat_room_conn_of,
    chat_room_free, chat_room_is_member, chat_room_join, chat_room_last_seq, chat_room_leave,
    chat_room_member_count, chat_room_message, chat_room_new, chat_room_nick, chat_version,
    CHAT_MAX_NICK_LEN,
};
pub use status::{chat_status, chat_status_str};

#[cfg(test)]
mod tests;
