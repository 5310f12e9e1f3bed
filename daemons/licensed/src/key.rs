//! Licence keys: `PENG-XXXX-XXXX-XXXX-XXXX-ABCD`.
//!
//! Four groups of four characters from `A-Z0-9` follow the `PENG` prefix; the last group is a
//! checksum: the first four hex digits (upper case) of SHA-256 over the first 24 characters
//! (`PENG-XXXX-XXXX-XXXX-XXXX`). It catches typos before anything goes over the network; it
//! is not a secret. Input is accepted in any case and normalised to upper case.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Fixed first group of every key.
pub const PREFIX: &str = "PENG";
/// Number of dash-separated groups, prefix and checksum included.
const GROUPS: usize = 6;

/// A well-formed licence key (checksum verified).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LicenceKey(String);

/// Why a string is not a licence key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty input.
    #[error("licence key is empty (expected PENG-XXXX-XXXX-XXXX-XXXX-ABCD)")]
    Empty,
    /// Wrong number of groups.
    #[error("licence key has {found} groups, expected 6 (PENG-XXXX-XXXX-XXXX-XXXX-ABCD)")]
    Groups {
        /// Groups found.
        found: usize,
    },
    /// The first group is not `PENG`.
    #[error("licence key must start with PENG-, not \"{found}-\"")]
    Prefix {
        /// The first group.
        found: String,
    },
    /// A group is not four characters long.
    #[error("group {group} of the licence key (\"{text}\") has {len} characters, expected 4")]
    GroupLength {
        /// 1-based group number.
        group: usize,
        /// The group.
        text: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character outside `A-Z0-9`.
    #[error(
        "character '{ch}' at position {position} of the licence key is not allowed (expected A-Z or 0-9)"
    )]
    Character {
        /// The character.
        ch: char,
        /// 1-based position in the key.
        position: usize,
    },
    /// The last group does not match the others.
    #[error(
        "licence key checksum does not match (last group \"{found}\"); check the key for typos"
    )]
    Checksum {
        /// The last group as given.
        found: String,
    },
}

impl LicenceKey {
    /// The key, upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key with the middle groups hidden: `PENG-****-****-****-****-ABCD`.
    pub fn masked(&self) -> String {
        let tail = self.0.rsplit('-').next().unwrap_or_default();
        format!("{PREFIX}-****-****-****-****-{tail}")
    }

    /// Builds a valid key from its four middle groups (used by tests and the reference server).
    pub fn from_groups(groups: [&str; 4]) -> Result<Self, KeyError> {
        let body = format!("{PREFIX}-{}", groups.join("-"));
        format!("{body}-{}", checksum(&body.to_ascii_uppercase())).parse()
    }
}

/// Checksum group of the first 24 characters.
fn checksum(body: &str) -> String {
    hex::encode_upper(&Sha256::digest(body.as_bytes())[..2])
}

impl FromStr for LicenceKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let upper = s.to_ascii_uppercase();
        let groups: Vec<&str> = upper.split('-').collect();
        if groups.len() != GROUPS {
            return Err(KeyError::Groups {
                found: groups.len(),
            });
        }
        if groups[0] != PREFIX {
            return Err(KeyError::Prefix {
                found: groups[0].to_owned(),
            });
        }
        let mut position = 0;
        for (i, g) in groups.iter().enumerate() {
            let len = g.chars().count();
            if len != 4 {
                return Err(KeyError::GroupLength {
                    group: i + 1,
                    text: (*g).to_owned(),
                    len,
                });
            }
            for ch in g.chars() {
                position += 1;
                if !(ch.is_ascii_uppercase() || ch.is_ascii_digit()) {
                    return Err(KeyError::Character { ch, position });
                }
            }
            position += 1; // the dash
        }
        let body = &upper[..24];
        if checksum(body) != groups[5] {
            return Err(KeyError::Checksum {
                found: groups[5].to_owned(),
            });
        }
        Ok(Self(upper))
    }
}

impl fmt::Display for LicenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LicenceKey {
    // Never print a whole key into logs by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_key_round_trips_and_is_masked() {
        let k = LicenceKey::from_groups(["AB12", "CD34", "EF56", "GH78"]).unwrap();
        let again: LicenceKey = k.as_str().to_ascii_lowercase().parse().unwrap();
        assert_eq!(k, again);
        assert!(k.masked().starts_with("PENG-****-****-****-****-"));
        assert_eq!(k.masked().len(), k.as_str().len());
        assert!(!format!("{k:?}").contains("AB12"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let good = LicenceKey::from_groups(["AB12", "CD34", "EF56", "GH78"])
            .unwrap()
            .to_string();
        assert_eq!("".parse::<LicenceKey>(), Err(KeyError::Empty));
        assert_eq!(
            "PENG-AB12".parse::<LicenceKey>(),
            Err(KeyError::Groups { found: 2 })
        );
        assert_eq!(
            good.replacen("PENG", "PING", 1).parse::<LicenceKey>(),
            Err(KeyError::Prefix {
                found: "PING".into()
            })
        );
        assert_eq!(
            good.replacen("AB12", "AB1", 1).parse::<LicenceKey>(),
            Err(KeyError::GroupLength {
                group: 2,
                text: "AB1".into(),
                len: 3
            })
        );
        assert_eq!(
            good.replacen("CD34", "C_34", 1).parse::<LicenceKey>(),
            Err(KeyError::Character {
                ch: '_',
                position: 12
            })
        );
        let typo = good.replacen("EF56", "EF57", 1);
        assert!(matches!(
            typo.parse::<LicenceKey>(),
            Err(KeyError::Checksum { .. })
        ));
        let msg = typo.parse::<LicenceKey>().unwrap_err().to_string();
        assert!(msg.contains("checksum"), "{msg}");
    }
}
