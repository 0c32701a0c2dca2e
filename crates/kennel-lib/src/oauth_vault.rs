//! Where the host keeps subscription logins (`kennel login`): the real
//! tokens in the user's secret store (the keyring, or the 0600 file; see
//! [`crate::secrets`]) as the secret `KENNEL_LOGIN_<AGENT>`, one line of
//! JSON with the sentinels the agent has instead. Every kennel process of
//! the user that brokers the login (a `kennel run`, a session's proxy
//! daemon, a native session's pane) uses this vault; a refresh holds the
//! login's lock file, `<data>/logins/<agent>/oauth.lock`, so that one
//! rotating refresh token is used by one process at a time.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kennel_proxy::{LoginTokens, LoginVault};

use crate::error::CliError;
use crate::secrets::SecretStore;

/// The secret that holds agent `agent`'s login.
pub fn secret_name(agent: &str) -> String {
    format!(
        "{}{}",
        SECRET_PREFIX,
        agent.to_ascii_uppercase().replace('-', "_")
    )
}

/// Secrets with this prefix are logins; `kennel secret set` leaves them
/// to `kennel login`.
pub const SECRET_PREFIX: &str = "KENNEL_LOGIN_";

/// The logins kept under kennel's data directory `data_dir`.
#[derive(Debug, Clone)]
pub struct StoreVault {
    data_dir: PathBuf,
}

impl StoreVault {
    pub fn new(data_dir: &Path) -> StoreVault {
        StoreVault {
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn store(&self) -> Result<SecretStore, String> {
        SecretStore::open(&self.data_dir).map_err(|error| error.message)
    }

    /// Forgets agent `agent`'s login; `false` when none was kept.
    pub fn forget(&self, agent: &str) -> Result<bool, CliError> {
        let _guard = self
            .lock(agent)
            .map_err(|why| CliError::kennel(format!("cannot lock the {agent} login: {why}")))?;
        SecretStore::open(&self.data_dir)?.remove(&secret_name(agent))
    }
}

impl LoginVault for StoreVault {
    fn lock(&self, name: &str) -> Result<Box<dyn Send>, String> {
        let dir = kennel_core::logins::store_dir(&self.data_dir, name);
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(|error| format!("{}: {error}", parent.display()))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(format!("{}: {error}", dir.display()));
            }
            _ => {}
        }
        let path = dir.join("oauth.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        file.lock()
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Ok(Box::new(file))
    }

    fn load(&self, name: &str) -> Result<Option<LoginTokens>, String> {
        let Some(value) = self
            .store()?
            .value(&secret_name(name))
            .map_err(|error| error.message)?
        else {
            return Ok(None);
        };
        // The parser's error would quote the value: only its position.
        serde_json::from_str(value.expose()).map(Some).map_err(|error| {
            format!(
                "the secret {} is not a login kennel made (column {}); log in again with `kennel login {name}`",
                secret_name(name),
                error.column()
            )
        })
    }

    fn save(&self, name: &str, tokens: &LoginTokens) -> Result<(), String> {
        let json = zeroize::Zeroizing::new(
            serde_json::to_string(tokens).map_err(|error| error.to_string())?,
        );
        self.store()?
            .set(&secret_name(name), &json)
            .map_err(|error| error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u32) -> LoginTokens {
        LoginTokens {
            access: format!("sk-ant-oat01-real-{n}"),
            refresh: format!("sk-ant-ort01-real-{n}"),
            expires_at: 2_000_000_000,
            scope: Some("user:inference".into()),
            access_sentinel: "sk-ant-oat01-sent".into(),
            refresh_sentinel: "sk-ant-ort01-sent".into(),
        }
    }

    #[test]
    fn logins_are_kept_as_secrets_and_forgotten() {
        let data = tempfile::tempdir().expect("tempdir");
        let vault = StoreVault::new(data.path());
        // SAFETY of the test: the file store, whatever the machine has.
        let store = SecretStore::open_file(data.path());
        assert_eq!(vault.load("claude").expect("load"), None);
        store
            .set(
                &secret_name("claude"),
                &serde_json::to_string(&tokens(1)).expect("json"),
            )
            .expect("set");
        assert_eq!(
            vault.load("claude").expect("load"),
            Some(tokens(1)),
            "read back"
        );
        assert_eq!(secret_name("my-agent"), "KENNEL_LOGIN_MY_AGENT");
        store
            .set(&secret_name("claude"), "not json sk-ant-ort01-real-1")
            .expect("set");
        let error = vault.load("claude").expect_err("not a login");
        assert!(!error.contains("real-1"), "{error}");
        assert!(error.contains("kennel login claude"), "{error}");
        // The lock is a file of the login store's directory, 0600.
        let guard = vault.lock("claude").expect("lock");
        let lock = kennel_core::logins::store_dir(data.path(), "claude").join("oauth.lock");
        assert!(lock.is_file());
        drop(guard);
    }

    #[test]
    fn the_lock_is_not_followed_through_a_link() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = kennel_core::logins::store_dir(data.path(), "claude");
        fs::create_dir_all(&dir).expect("dir");
        let elsewhere = data.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.join("oauth.lock")).expect("link");
        assert!(StoreVault::new(data.path()).lock("claude").is_err());
        assert!(!elsewhere.exists());
    }
}
