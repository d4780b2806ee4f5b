//! Unit names: the one place that decides what a valid name is (SPEC §3: 1–255 bytes of UTF-8, no
//! control characters). A [`UnitName`] is validated once at the edge and then shared cheaply
//! (`Arc<str>`); nothing else in the crate re-checks names. No I/O, no graph logic.

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
        } else if name.chars().any(char::is_control) {
            Err(NameRule::ControlCharacter)
        } else {
            Ok(())
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text, for the unit table's key (the loom stand-in table keys by `String`).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.0
    }
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
    fn deserialising_validates() {
        let ok: UnitName = serde_json::from_str("\"git\"").unwrap();
        assert_eq!(ok.as_str(), "git");
        assert!(serde_json::from_str::<UnitName>("\"a\\tb\"").is_err());
    }
}
