//! HTTP client of the licence server: per-request timeout, retries with exponential backoff
//! and full jitter for transport errors, timeouts and 5xx, none for 4xx (a rejected key does
//! not get better by asking again).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::ErrorBody;

/// First backoff step; doubled per attempt up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Why a call to the licence server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// 401: the server does not know the key.
    #[error("licence server rejected the key: {0}")]
    InvalidKey(String),
    /// 403 `expired`: the licence has expired.
    #[error("licence expired: {message}")]
    Expired {
        /// Server's text.
        message: String,
        /// When, Unix seconds, if the server said.
        expires_at: Option<i64>,
    },
    /// 403 or another 4xx: the key is known but not allowed (other product, revoked, ...).
    #[error("licence server refused the request ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code from the body.
        code: String,
        /// Server's text.
        message: String,
    },
    /// No usable answer after every attempt (network, timeout, 5xx).
    #[error("licence server unreachable after {attempts} attempt(s): {last}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The server answered 200 with a body we cannot read.
    #[error("licence server sent an unreadable answer: {0}")]
    BadResponse(String),
    /// The client could not be built (bad `ca-file`).
    #[error("cannot set up the licence client: {0}")]
    Setup(String),
}

impl ClientError {
    /// Whether this means "the server could not be reached" (grace applies), as opposed to
    /// "the server said no".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::BadResponse(_))
    }
}

/// Client settings, from `[licence]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL.
    pub server_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Extra trust anchors (PEM).
    pub ca_pem: Option<Vec<u8>>,
}

/// A licence server client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    settings: Settings,
}

impl Client {
    /// Builds a client.
    pub fn new(settings: Settings) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(format!("rookery-licensed/{}", rookery_common::VERSION));
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Setup(format!("ca-file is not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Setup("ca-file holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self { http, settings })
    }

    /// POSTs `body` to `path`, retrying as documented, and decodes the 200 answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let url = format!("{}{path}", self.settings.server_url.trim_end_matches('/'));
        let attempts = self.settings.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            match self.http.post(&url).json(body).send().await {
                Err(err) => {
                    last = rookery_common::error_chain(&err);
                    tracing::debug!(attempt, error = %last, "Licence server request failed.");
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return resp
                            .json::<R>()
                            .await
                            .map_err(|e| ClientError::BadResponse(e.to_string()));
                    }
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_server_error() {
                        last = format!("HTTP {status}");
                        tracing::debug!(attempt, status = status.as_u16(), "Licence server error.");
                        continue;
                    }
                    let body: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
                        error: String::new(),
                        message: text.chars().take(200).collect(),
                        expires_at: None,
                    });
                    return Err(match (status.as_u16(), body.error.as_str()) {
                        (401, _) => ClientError::InvalidKey(body.message),
                        (403, "expired") => ClientError::Expired {
                            message: body.message,
                            expires_at: body.expires_at,
                        },
                        (code, _) => ClientError::Refused {
                            status: code,
                            code: body.error,
                            message: body.message,
                        },
                    });
                }
            }
        }
        Err(ClientError::Unreachable { attempts, last })
    }
}

/// Full jitter: a uniform wait in [0, min(cap, base·2^(n-1))].
pub fn backoff(retry: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    ceiling.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        for retry in 1..40 {
            assert!(backoff(retry) <= BACKOFF_CAP);
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        let mut max_seen = Duration::ZERO;
        for _ in 0..200 {
            max_seen = max_seen.max(backoff(4));
        }
        assert!(
            max_seen > BACKOFF_BASE,
            "later retries may wait longer: {max_seen:?}"
        );
    }

    /// The backoff waits on tokio time, so paused-time tests (and the manager's shutdown)
    /// are not held up by real sleeps.
    #[tokio::test(start_paused = true)]
    async fn retries_wait_on_tokio_time_and_give_up_after_max_attempts() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(Settings {
            // A closed loopback port: every attempt is refused.
            server_url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_secs(60),
            max_attempts: 10,
            ca_pem: None,
        })
        .expect("a client without ca-file builds");
        let real = std::time::Instant::now();
        let virt = tokio::time::Instant::now();
        let err = client
            .post::<_, serde_json::Value>(crate::protocol::VALIDATE, &serde_json::json!({}))
            .await
            .expect_err("nothing listens on port 9");
        match &err {
            ClientError::Unreachable { attempts, .. } => assert_eq!(*attempts, 10, "{err}"),
            other => panic!("expected unreachable, got {other}"),
        }
        assert!(err.is_unreachable(), "grace applies to {err}");
        let waited = virt.elapsed();
        assert!(
            waited > Duration::from_secs(1),
            "nine jittered backoffs (up to 121.5s) waited only {waited:?}"
        );
        assert!(
            real.elapsed() < Duration::from_secs(10),
            "backoff slept in real time: {:?}",
            real.elapsed()
        );
    }
}
