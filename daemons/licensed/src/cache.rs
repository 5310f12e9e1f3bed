//! The durable cache in the state directory: the entitlements last granted and the grace
//! evidence (`cache.json`), and a key installed with `SetKey` (`key`). Written atomically; a
//! corrupt cache is logged and ignored, never a crash.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grace::Evidence;
use crate::protocol::GrantedFeature;

/// File name of the cache.
pub const CACHE_FILE: &str = "cache.json";
/// File name of a key installed through `SetKey`.
pub const KEY_FILE: &str = "key";

/// Entitlements as last granted by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Masked key they belong to (a different key invalidates them).
    pub key_masked: String,
    /// Licensee.
    pub customer: String,
    /// Tier name.
    pub tier: String,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
    /// Granted features.
    pub features: Vec<GrantedFeature>,
}

/// Everything persisted between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// Last granted entitlements.
    pub entitlement: Option<Entitlement>,
    /// Grace evidence.
    pub evidence: Evidence,
}

/// The state directory's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Files under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Loads the cache; a missing file is an empty cache, a corrupt one is logged and ignored.
    pub fn load(&self) -> Cache {
        let path = self.dir.join(CACHE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(file = %path.display(), error = %err, "Entitlement cache is corrupt, ignoring it.");
                Cache::default()
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Cache::default(),
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "Cannot read the entitlement cache, ignoring it.");
                Cache::default()
            }
        }
    }

    /// Saves the cache atomically.
    pub fn save(&self, cache: &Cache) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(cache).map_err(io::Error::other)?;
        rookery_common::fsutil::write_atomic(&self.dir.join(CACHE_FILE), &bytes)
    }

    /// The key installed with `SetKey`, if any.
    pub fn load_key(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(KEY_FILE))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Persists a key installed with `SetKey` (mode 0600, atomic).
    pub fn save_key(&self, key: &str) -> io::Result<()> {
        rookery_common::fsutil::write_atomic(
            &self.dir.join(KEY_FILE),
            format!("{key}\n").as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load(), Cache::default());
        let mut cache = Cache::default();
        cache.evidence.success(1_800_000_000);
        cache.entitlement = Some(Entitlement {
            key_masked: "PENG-****-****-****-****-ABCD".into(),
            customer: "Acme".into(),
            tier: "enterprise".into(),
            expires_at: Some(1_900_000_000),
            features: vec![GrantedFeature {
                name: "autoperf".into(),
                enabled: true,
            }],
        });
        store.save(&cache).unwrap();
        assert_eq!(store.load(), cache);
        std::fs::write(dir.path().join(CACHE_FILE), b"{not json").unwrap();
        assert_eq!(store.load(), Cache::default());
        store.save_key("PENG-X").unwrap();
        assert_eq!(store.load_key().as_deref(), Some("PENG-X"));
    }
}
