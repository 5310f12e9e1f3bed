//! Accounts without the API: the one-time admin of first boot, and the console password
//! reset that `rookeryctl user reset-password` performs.

use std::path::Path;

use rookery_common::logging::{AaaKind, aaa};

use crate::api::now;
use crate::crypto;
use crate::store::{Role, Store, StoreError};

/// Name of the one-time admin when the file does not give one.
pub const DEFAULT_ADMIN: &str = "admin";

/// Reads the initial-admin file: either the password alone on the first non-empty line, or
/// `username=…` / `password=…` lines. Returns `(username, password)`.
pub fn parse_initial_admin(text: &str) -> Option<(String, String)> {
    let mut username = None;
    let mut password = None;
    let mut keyed = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("password=") {
            keyed = true;
            password = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("username=") {
            keyed = true;
            username = Some(v.trim().to_owned());
        }
    }
    if !keyed {
        password = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .find(|l| !l.trim().is_empty())
            .map(str::to_owned);
    }
    let password = password.filter(|p| !p.is_empty())?;
    let username = username
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
    Some((username, password))
}

/// What [`create_initial_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialAdmin {
    /// Users exist already: the file is ignored.
    UsersExist,
    /// No users and no file: nobody can log in until `rookeryctl user reset-password` or the
    /// first-boot service writes the file.
    NoFile,
    /// The file exists but holds no password.
    Empty,
    /// Created this admin, who must change the password at first login.
    Created(String),
}

/// Why the initial admin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InitialAdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file exists but cannot be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// With no users, creates the admin from `file` (must change the password at first login).
pub fn create_initial_admin(store: &Store, file: &Path) -> Result<InitialAdmin, InitialAdminError> {
    if store.user_count()? > 0 {
        return Ok(InitialAdmin::UsersExist);
    }
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(InitialAdmin::NoFile),
        Err(source) => {
            return Err(InitialAdminError::Read {
                path: file.to_path_buf(),
                source,
            });
        }
    };
    let Some((username, password)) = parse_initial_admin(&text) else {
        return Ok(InitialAdmin::Empty);
    };
    let hash = crypto::hash_password(&password);
    store.create_user(&username, &hash, Role::Admin, true, now())?;
    aaa(
        AaaKind::Audit,
        "",
        "user.create.initial-admin",
        "success",
        &[("target", &username)],
    );
    Ok(InitialAdmin::Created(username))
}

/// Why a console password reset failed.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such user.
    #[error("no user \"{0}\"")]
    NoUser(String),
}

/// Console recovery (`rookeryctl user reset-password <name>`): opens apid's store in
/// `state_dir` (default `/var/lib/rookery/apid`), gives `username` a fresh random password
/// that must be changed at next login, clears the lockout, and revokes the user's sessions.
/// Returns the new password, to be shown once on the console.
pub fn reset_password(state_dir: &Path, username: &str) -> Result<String, ResetError> {
    let store = Store::open(state_dir)?;
    let user = store
        .user_by_name(username)?
        .ok_or_else(|| ResetError::NoUser(username.to_owned()))?;
    let password = crypto::random_token(15);
    store.set_password(user.id, &crypto::hash_password(&password), true, now())?;
    let msg = "password reset on the console";
    aaa(
        AaaKind::Audit,
        "console",
        "user.password.reset",
        "success",
        &[("target", username)],
    );
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    store.audit(
        &ts,
        "AUDIT",
        "console",
        "user.password.reset",
        "success",
        "",
        &format!("target={username} note={msg}"),
    )?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_initial_admin_formats() {
        assert_eq!(
            parse_initial_admin("s3cret-One-Time\n"),
            Some(("admin".into(), "s3cret-One-Time".into()))
        );
        assert_eq!(
            parse_initial_admin("username=root2\npassword=a b=c\n"),
            Some(("root2".into(), "a b=c".into()))
        );
        assert_eq!(
            parse_initial_admin("password=xyz\n"),
            Some(("admin".into(), "xyz".into()))
        );
        assert_eq!(parse_initial_admin("\n\n"), None);
        assert_eq!(parse_initial_admin("username=admin\n"), None);
    }

    #[test]
    fn reset_password_forces_a_change_and_unlocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let u = store
            .create_user(
                "ann",
                &crypto::hash_password("old password 1"),
                Role::Viewer,
                false,
                0,
            )
            .unwrap()
            .unwrap();
        store.login_failed(u.id, 1, 60, 60, now()).unwrap();
        drop(store);
        let pw = reset_password(dir.path(), "ann").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let u = store.user_by_name("ann").unwrap().unwrap();
        assert!(u.must_change_password);
        assert_eq!(u.locked_until, 0);
        assert!(crypto::verify_password(&pw, &u.password_hash));
        assert!(matches!(
            reset_password(dir.path(), "bob"),
            Err(ResetError::NoUser(_))
        ));
    }
}
