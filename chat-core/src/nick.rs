//! Nicknames: what is valid, how uniqueness is judged, and the random `user-N` space.

use std::borrow::Borrow;
use std::fmt;

/// Longest valid nickname, in bytes (nicknames are ASCII).
pub const MAX_NICK_LEN: usize = 32;

/// Random nicknames are `user-N` with `N` drawn uniformly from `0..RANDOM_NICK_SPACE`.
pub const RANDOM_NICK_SPACE: u32 = 100_000;

/// A member's nickname: 1-32 of `[A-Za-z0-9_-]`, unique in its room ignoring ASCII case.
///
/// Stored inline (no heap, `Copy`): every event that names a member carries its own copy, so
/// delivering or replaying an event touches no shared counter.
#[derive(Clone, Copy)]
pub struct Nick {
    len: u8,
    bytes: [u8; MAX_NICK_LEN],
}

impl Nick {
    /// Checks `name` against the nickname rules.
    pub fn parse(name: &str) -> Option<Nick> {
        if !is_valid(name) {
            return None;
        }
        let mut bytes = [0; MAX_NICK_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Nick {
            // `is_valid` bounds the length by 32.
            len: name.len() as u8,
            bytes,
        })
    }

    /// The nickname as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (`parse` checks it), so this cannot fail.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The key that uniqueness is judged by: the nickname in ASCII lower case.
    pub(crate) fn key(&self) -> NickKey {
        NickKey::of(self.as_str())
    }
}

impl std::ops::Deref for Nick {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Nick {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Nick {
    fn eq(&self, other: &Nick) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Nick {}

impl PartialOrd for Nick {
    fn partial_cmp(&self, other: &Nick) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Nick {
    fn cmp(&self, other: &Nick) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Nick {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Nick {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Nick {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `true` for 1-32 of `[A-Za-z0-9_-]`.
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_NICK_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Case-folded nickname used as the uniqueness key (`Alice` and `alice` collide).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NickKey(Box<str>);

impl NickKey {
    pub(crate) fn of(name: &str) -> NickKey {
        NickKey(name.to_ascii_lowercase().into_boxed_str())
    }

    /// `Some(N)` when this key is exactly a name the random generator can draw (`user-N`,
    /// `N < RANDOM_NICK_SPACE`, no leading zeros), so the room can tell how full that space is.
    pub(crate) fn random_slot(&self) -> Option<u32> {
        let digits = self.0.strip_prefix("user-")?;
        if digits.is_empty()
            || digits.len() > 5
            || (digits.len() > 1 && digits.starts_with('0'))
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        (n < RANDOM_NICK_SPACE).then_some(n)
    }
}

impl Borrow<str> for NickKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_nicknames_are_1_to_32_of_the_allowed_characters() {
        for ok in ["a", "Z", "0", "user-1", "a_b-c", &"x".repeat(32)] {
            assert!(is_valid(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            &"x".repeat(33),
            "a b",
            "a.b",
            "é",
            "a\n",
            "a\0",
            "<script>",
            "/nick",
        ] {
            assert!(!is_valid(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn keys_ignore_ascii_case() {
        assert_eq!(NickKey::of("Alice"), NickKey::of("aLICE"));
        assert_ne!(NickKey::of("alice"), NickKey::of("alice_"));
    }

    #[test]
    fn random_slot_recognises_exactly_the_drawable_names() {
        assert_eq!(NickKey::of("user-0").random_slot(), Some(0));
        assert_eq!(NickKey::of("USER-99999").random_slot(), Some(99_999));
        assert_eq!(NickKey::of("user-100000").random_slot(), None);
        assert_eq!(NickKey::of("user-007").random_slot(), None);
        assert_eq!(NickKey::of("user-").random_slot(), None);
        assert_eq!(NickKey::of("user-1a").random_slot(), None);
        assert_eq!(NickKey::of("bob").random_slot(), None);
    }
}
