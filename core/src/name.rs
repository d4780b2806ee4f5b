//! Unit names: the one place that decides what a valid name is (SPEC §3: 1–255 bytes of UTF-8, no
//! control characters). Names arriving at the graph are checked without allocating
//! ([`UnitName::check`]); a [`UnitName`] (shared cheaply, `Arc<str>`) is made only for a unit the graph
//! creates, or for an error that names one. Nothing else in the crate re-checks names. No I/O, no
//! graph logic.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum NameRule {
    /// The empty string.
    #[error("a unit name must not be empty")]
    Empty,
    /// More than [`MAX_NAME_BYTES`] bytes.
    #[error("a unit name must be at most 255 bytes of UTF-8")]
    TooLong,
    /// Contains a control character (newline, tab, NUL, ...).
    #[error("a unit name must not contain control characters")]
    ControlCharacter,
}

/// A validated unit name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(Arc<str>);

impl UnitName {
    /// Validates `name` against SPEC §3's rules.
    pub fn new(name: &str) -> Result<Self, NameRule> {
        Self::check(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// Checks `name` without allocating.
    pub fn check(name: &str) -> Result<(), NameRule> {
        if name.is_empty() {
            Err(NameRule::Empty)
        } else if name.len() > MAX_NAME_BYTES {
            Err(NameRule::TooLong)
        } else if has_control(name) {
            Err(NameRule::ControlCharacter)
        } else {
            Ok(())
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name the caller already checked (with [`check`](Self::check)); allocates only the text.
    pub(crate) fn from_valid(name: &str) -> Self {
        debug_assert!(Self::check(name).is_ok());
        Self(Arc::from(name))
    }
}

/// Whether `name` contains a control character (Unicode `Cc`: U+0000–U+001F, U+007F–U+009F), by
/// bytes: in UTF-8 the first range and U+007F are single bytes below 0x20 or equal to 0x7F (never
/// part of a longer sequence), and U+0080–U+009F are exactly the pairs `0xC2 0x80..=0x9F`.
fn has_control(name: &str) -> bool {
    let bytes = name.as_bytes();
    // A branch-free scan first (the usual answer is no); pairs only if a 0xC2 lead byte is there.
    if !bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    }) {
        return false;
    }
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2
                && bytes
                    .get(i + 1)
                    .is_some_and(|next| (0x80..=0x9f).contains(next)))
    })
}

impl TryFrom<String> for UnitName {
    type Error = NameRule;
    fn try_from(value: String) -> Result<Self, NameRule> {
        Self::check(&value)?;
        Ok(Self(Arc::from(value)))
    }
}

impl TryFrom<&str> for UnitName {
    type Error = NameRule;
    fn try_from(value: &str) -> Result<Self, NameRule> {
        Self::new(value)
    }
}

impl From<UnitName> for String {
    fn from(name: UnitName) -> String {
        name.0.to_string()
    }
}

impl Borrow<str> for UnitName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UnitName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        assert!(UnitName::new("git").is_ok());
        assert!(UnitName::new("npm install (frontend)").is_ok());
        assert!(UnitName::new("développeur-😀").is_ok());
        assert!(UnitName::new(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn refuses_each_rule() {
        assert_eq!(UnitName::new(""), Err(NameRule::Empty));
        assert_eq!(UnitName::new(&"x".repeat(256)), Err(NameRule::TooLong));
        // 128 two-byte characters are 256 bytes even though only 128 chars.
        assert_eq!(UnitName::new(&"é".repeat(128)), Err(NameRule::TooLong));
        assert_eq!(UnitName::new("a\nb"), Err(NameRule::ControlCharacter));
        assert_eq!(UnitName::new("a\u{7f}"), Err(NameRule::ControlCharacter));
        assert_eq!(UnitName::new("\0"), Err(NameRule::ControlCharacter));
    }

    #[test]
    fn the_byte_check_agrees_with_char_is_control() {
        for c in (0..0x800u32).filter_map(char::from_u32) {
            for text in [format!("{c}"), format!("a{c}b"), format!("é{c}")] {
                assert_eq!(
                    has_control(&text),
                    text.chars().any(char::is_control),
                    "{:?}",
                    text
                );
            }
        }
        assert!(!has_control("développeur-😀"));
    }

    #[test]
    fn deserialising_validates() {
        let ok: UnitName = serde_json::from_str("\"git\"").unwrap();
        assert_eq!(ok.as_str(), "git");
        assert!(serde_json::from_str::<UnitName>("\"a\\tb\"").is_err());
    }
}
