//! Nicknames: what is valid, how uniqueness is judged, and the random `user-N` space.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest valid nickname, in bytes (nicknames are ASCII).
pub const MAX_NICK_LEN: usize = 32;

/// Random nicknames are `user-N` with `N` drawn uniformly from `0..RANDOM_NICK_SPACE`.
pub const RANDOM_NICK_SPACE: u32 = 100_000;

/// A member's nickname: 1-32 of `[A-Za-z0-9_-]`, unique in its room ignoring ASCII case.
///
/// Cheap to clone (shared); every event that names a member shares the same allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nick(Arc<str>);

impl Nick {
    /// Checks `name` against the nickname rules.
    pub fn parse(name: &str) -> Option<Nick> {
        is_valid(name).then(|| Nick(Arc::from(name)))
    }

    /// The nickname as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that uniqueness is judged by: the nickname in ASCII lower case.
    pub(crate) fn key(&self) -> NickKey {
        NickKey::of(&self.0)
    }
}

impl std::ops::Deref for Nick {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Nick {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Nick {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Nick {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
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
