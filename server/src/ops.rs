//! What operators and their orchestrators ask the server: `/healthz` (the process answers),
//! `/readyz` (the store answers: it can write now) and `/metrics` (Prometheus text, with the
//! process's CPU, memory and descriptors under Prometheus' standard `process_*` names).
//!
//! `/metrics` is on the public address, or with `--metrics-listen` on an address of its own
//! (with `/healthz` and `/readyz`) and not on the public one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::time::Instant;

use crate::store::Store;

/// How long one probe's verdict answers `/readyz`: however many requests come, the store is
/// probed at most about once per this (plus the probe's own time).
const VERDICT_FRESH_FOR: Duration = Duration::from_secs(1);

/// The routes of this module: `/healthz` and `/readyz`, and `/metrics` when `metrics` says so.
pub fn routes(readiness: Arc<Readiness>, metrics: bool) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    if metrics {
        routes.route("/metrics", get(metrics_text))
    } else {
        routes
    }
}

/// Whether the store answers: a probe ([`Store::check_ready`]) bounded by `timeout`, one at a
/// time; requests that arrive while it runs, or within [`VERDICT_FRESH_FOR`] of its end, share
/// its verdict. So a flood of `/readyz` requests costs the store one small write a second.
pub struct Readiness {
    store: Arc<dyn Store>,
    timeout: Duration,
    fresh_for: Duration,
    /// The last verdict and when it was reached; held for the whole of a probe.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub fn new(store: Arc<dyn Store>, timeout: Duration) -> Self {
        Self {
            store,
            timeout,
            fresh_for: VERDICT_FRESH_FOR,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the store proved within the timeout, now or a moment ago, that it can write.
    pub async fn ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last {
            if at.elapsed() < self.fresh_for {
                return ready;
            }
        }
        let ready = match tokio::time::timeout(self.timeout, self.store.check_ready()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if last.is_none_or(|(_, was)| was) {
                    tracing::warn!(error = %format_args!("{e:#}"), "not ready: the store failed a write");
                }
                false
            }
            Err(_) => {
                if last.is_none_or(|(_, was)| was) {
                    tracing::warn!(
                        timeout_ms = self.timeout.as_millis() as u64,
                        "not ready: the store did not answer in time"
                    );
                }
                false
            }
        };
        if ready && last.is_some_and(|(_, was)| !was) {
            tracing::info!("ready again: the store answers");
        }
        *last = Some((Instant::now(), ready));
        ready
    }
}

async fn healthz() -> Response {
    plain(StatusCode::OK, "ok")
}

/// 200 `ready`, or 503 with a reason that names nothing of the deployment (no URL, path or
/// error text: those are logged, once per change).
async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.ready().await {
        plain(StatusCode::OK, "ready")
    } else {
        plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The recorder's metrics, then the process's, read from `/proc` at the scrape.
async fn metrics_text() -> Response {
    let body = tokio::task::spawn_blocking(|| {
        let mut body = crate::http::metrics_handle().render();
        if let Some(stats) = crate::process::Stats::now() {
            stats.render(&mut body);
        }
        body
    })
    .await;
    match body {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "something went wrong"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{SessionId, UserId, Username};
    use crate::store::{
        Conversations, Expired, NewMessage, Page, Session, StoreError, Stored, Touched, User,
    };

    /// A store whose only working call is the probe: counted, slow, failing on demand.
    #[derive(Default)]
    struct Probed {
        probes: AtomicUsize,
        failing: AtomicBool,
        delay: std::sync::Mutex<Duration>,
    }

    #[async_trait]
    impl Store for Probed {
        async fn check_ready(&self) -> Result<(), StoreError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if self.failing.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable(
                    "disk I/O error at /secret/path".into(),
                ))
            } else {
                Ok(())
            }
        }
        async fn create_session(
            &self,
            _: &Username,
            _: &str,
            _: Option<&crate::store::PopKey>,
        ) -> Result<crate::store::Created, StoreError> {
            unimplemented!()
        }
        async fn create_device_session(
            &self,
            _: &UserId,
            _: &str,
            _: u32,
            _: Option<&crate::store::PopKey>,
        ) -> Result<crate::store::NewDevice, StoreError> {
            unimplemented!()
        }
        async fn devices(&self, _: &UserId) -> Result<Vec<crate::store::Device>, StoreError> {
            unimplemented!()
        }
        async fn end_family(&self, _: &UserId, _: &str) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn end_unbound(&self, _: &UserId) -> Result<Vec<String>, StoreError> {
            unimplemented!()
        }
        async fn find_session(&self, _: &SessionId) -> Result<Option<Session>, StoreError> {
            unimplemented!()
        }
        async fn bind_key(
            &self,
            _: &str,
            _: &crate::store::PopKey,
        ) -> Result<crate::store::Bind, StoreError> {
            unimplemented!()
        }
        async fn rotate_secret(
            &self,
            _: &str,
            _: &str,
            _: crate::store::Reissue,
        ) -> Result<crate::store::Rotate, StoreError> {
            unimplemented!()
        }
        async fn mark_rotation_due(&self, _: &UserId, _: &str) -> Result<usize, StoreError> {
            unimplemented!()
        }
        async fn delete_session(&self, _: &SessionId) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn delete_user_sessions(&self, _: &UserId) -> Result<usize, StoreError> {
            unimplemented!()
        }
        async fn expire_sessions(&self, _: usize) -> Result<Vec<String>, StoreError> {
            unimplemented!()
        }
        async fn expire_accounts(&self, _: Duration, _: usize) -> Result<Expired, StoreError> {
            unimplemented!()
        }
        async fn touch_sessions(&self, _: Vec<String>) -> Result<Touched, StoreError> {
            unimplemented!()
        }
        async fn list_users(&self) -> Result<Arc<Vec<User>>, StoreError> {
            unimplemented!()
        }
        async fn insert_message(&self, _: NewMessage) -> Result<Option<Stored>, StoreError> {
            unimplemented!()
        }
        async fn conversations(
            &self,
            _: &UserId,
            _: u32,
            _: i64,
            _: u32,
        ) -> Result<Conversations, StoreError> {
            unimplemented!()
        }
        async fn messages_since(&self, _: &UserId, _: i64, _: u32) -> Result<Page, StoreError> {
            unimplemented!()
        }
        async fn history(
            &self,
            _: &UserId,
            _: &UserId,
            _: Option<i64>,
            _: u32,
        ) -> Result<Page, StoreError> {
            unimplemented!()
        }
        async fn mark_read(
            &self,
            _: &UserId,
            _: &UserId,
            _: i64,
        ) -> Result<Option<crate::store::MarkedRead>, StoreError> {
            unimplemented!()
        }
        async fn conversation_page(
            &self,
            _: &UserId,
            _: Option<i64>,
            _: u32,
            _: u32,
        ) -> Result<crate::store::ConversationPage, StoreError> {
            unimplemented!()
        }
        async fn settings(&self, _: &UserId) -> Result<crate::store::UserSettings, StoreError> {
            unimplemented!()
        }
        async fn change_settings(
            &self,
            _: &UserId,
            _: crate::store::SettingsChange,
        ) -> Result<Option<crate::store::SettingsChanged>, StoreError> {
            unimplemented!()
        }
        async fn socket_connected(&self, _: &UserId) -> Result<u32, StoreError> {
            unimplemented!()
        }
        async fn socket_disconnected(&self, _: &UserId) -> Result<Option<u32>, StoreError> {
            unimplemented!()
        }
        async fn online_users(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
            unimplemented!()
        }
        async fn protect(
            &self,
            _: &UserId,
            _: crate::store::StoredPasskey,
            _: &str,
        ) -> Result<crate::store::Protect, StoreError> {
            unimplemented!()
        }
        async fn passkeys(&self, _: &UserId) -> Result<crate::store::AccountPasskeys, StoreError> {
            unimplemented!()
        }
        async fn remove_passkey(
            &self,
            _: &UserId,
            _: &str,
        ) -> Result<crate::store::RemovedPasskey, StoreError> {
            unimplemented!()
        }
        async fn passkeys_by_name(
            &self,
            _: &str,
        ) -> Result<Option<(User, Vec<crate::store::StoredPasskey>)>, StoreError> {
            unimplemented!()
        }
        async fn oldest_with_name(&self, _: &str) -> Result<Option<UserId>, StoreError> {
            unimplemented!()
        }
        async fn passkey_used(
            &self,
            _: &UserId,
            _: &crate::store::StoredPasskey,
            _: crate::store::StoredPasskey,
        ) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn put_ceremony(&self, _: &str, _: String, _: Duration) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn take_ceremony(&self, _: &str) -> Result<Option<String>, StoreError> {
            unimplemented!()
        }
        async fn socket_count(&self, _: &UserId) -> Result<u32, StoreError> {
            unimplemented!()
        }
    }

    /// Readiness with short times (a real clock: tokio's paused one needs a feature this
    /// crate does not build with).
    fn readiness(store: Arc<Probed>) -> Readiness {
        Readiness {
            fresh_for: FRESH,
            ..Readiness::new(store, TIMEOUT)
        }
    }

    const FRESH: Duration = Duration::from_millis(200);
    const TIMEOUT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_flood_of_checks_shares_one_probe_at_a_time() {
        let store = Arc::new(Probed::default());
        *store.delay.lock().unwrap() = Duration::from_millis(100);
        let readiness = Arc::new(readiness(store.clone()));
        let checks: Vec<_> = (0..500)
            .map(|_| {
                let readiness = readiness.clone();
                tokio::spawn(async move { readiness.ready().await })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap());
        }
        assert_eq!(store.probes.load(Ordering::SeqCst), 1);
        // Past the verdict's freshness: one more probe.
        tokio::time::sleep(FRESH).await;
        assert!(readiness.ready().await);
        assert_eq!(store.probes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failing_or_silent_store_is_not_ready_within_the_timeout() {
        let store = Arc::new(Probed::default());
        let readiness = readiness(store.clone());
        store.failing.store(true, Ordering::SeqCst);
        assert!(!readiness.ready().await);
        tokio::time::sleep(FRESH).await;
        store.failing.store(false, Ordering::SeqCst);
        *store.delay.lock().unwrap() = Duration::from_secs(60);
        let started = Instant::now();
        assert!(!readiness.ready().await, "no answer within the timeout");
        let took = started.elapsed();
        assert!(took >= TIMEOUT && took < TIMEOUT * 3, "{took:?}");
        tokio::time::sleep(FRESH).await;
        *store.delay.lock().unwrap() = Duration::ZERO;
        assert!(readiness.ready().await, "ready again once it answers");
    }
}
