//! The panic boundary and the raw-pointer helpers every exported function goes through.

use crate::chat_status;
use std::ffi::c_char;

/// What an exported function returns when its body panicked.
pub(crate) trait OnPanic {
    /// The value handed to C instead of unwinding.
    fn on_panic() -> Self;
}

impl OnPanic for chat_status {
    fn on_panic() -> Self {
        chat_status::Panic
    }
}

impl OnPanic for () {
    fn on_panic() -> Self {}
}

impl OnPanic for *const c_char {
    fn on_panic() -> Self {
        c"chat-ffi: internal panic".as_ptr()
    }
}

/// Runs an exported function's body, turning a panic into the return type's
/// [`OnPanic`] value so it never unwinds across the C boundary.
#[macro_export]
#[doc(hidden)]
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {{
        // The body only touches memory C lent us for this call; if it panics half-way, the
        // room may hold a half-applied input, which C learns about through CHAT_STATUS_PANIC.
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(_) => <_ as $crate::boundary::OnPanic>::on_panic(),
        }
    }};
}

/// Unwraps a `Result<T, chat_status>` inside an exported body, returning the status on error.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(status) => return status,
        }
    };
}
pub(crate) use tri;

/// Borrows `len` bytes at `ptr`. NULL is allowed only with `len == 0`.
///
/// # Safety
/// Unless NULL, `ptr` must point to `len` readable bytes that stay unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], chat_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(chat_status::NullParameter);
    }
    // No real buffer is larger than isize::MAX; a length above it is a caller bug we can
    // see without touching memory.
    if len > isize::MAX as usize {
        return Err(chat_status::TooLong);
    }
    // SAFETY: `ptr` is non-NULL, `len` fits a slice, and the caller promises `len` readable
    // bytes that outlive `'a` (the header documents this for every buffer parameter).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` bytes at `ptr` as UTF-8 text.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn text<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, chat_status> {
    // SAFETY: forwarded from this function's own contract.
    let raw = unsafe { bytes(ptr.cast(), len) }?;
    std::str::from_utf8(raw).map_err(|_| chat_status::InvalidUtf8)
}

/// Writes `value` through `out` if it is not NULL.
///
/// # Safety
/// Unless NULL, `out` must be valid for writing a `T` (it may be uninitialized).
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> Result<(), chat_status> {
    if out.is_null() {
        return Err(chat_status::NullParameter);
    }
    // SAFETY: non-NULL, and the caller promises it is valid and aligned for a `T`;
    // `write` does not read or drop the possibly uninitialized old value.
    unsafe { out.write(value) };
    Ok(())
}
