//! The store contract: every promise of `server::store::Store` (its doc comments), written once
//! against `dyn Store` and run against every store, each scenario its own test per store
//! (`store_contract::sqlite::dedup_by_client_id`, `store_contract::redis::dedup_by_client_id`).
//! A new store is one [`Backend`] and one line in `contract!` at the bottom.
//!
//! It lives with the integration tests because it tests the public trait only, and the Redis
//! backend needs `helpers::RedisServer` (the test Redis, with a prefix of the test's own).
//! What one store does that the contract does not promise is tested beside that store
//! (SQLite: migrations, indexes, the writer thread; Redis: several nodes, the dead-node sweep).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use protocol::payloads::Message;
use server::domain::{ClientMsgId, MessageContent, SessionId, UserId, Username};
use server::store::redis::{NodeOptions, RedisStore};
use server::store::sqlite::{SessionPolicy, SqliteStore};
use server::store::{
    AccountPasskeys, Bind, ConversationPage, Created, Expired, MarkedRead, NewDevice, NewMessage,
    Page, PopKey, Protect, ReadCursor, Reissue, RemovedPasskey, Rotate, Secret, SettingsChange,
    Store, Stored, StoredPasskey, Touched, User, UserSettings, PASSKEYS_PER_USER_MAX, UNREAD_MAX,
};
use tokio::time::sleep;

use crate::helpers::{RedisCluster, RedisServer};

type Db = Arc<dyn Store>;

/// A kind of store, and one test's data in it.
trait Backend: Sized {
    /// Empty data of this test's own.
    async fn start() -> Self;
    /// Empty data on a backend this test may take away ([`Backend::take_away`]).
    async fn start_own() -> Self {
        Self::start().await
    }
    /// A new store instance on this data (a restart, or another node where there can be
    /// several). Scenarios drop every instance before opening another: SQLite's file belongs
    /// to one process at a time.
    async fn open(&self, policy: SessionPolicy) -> Db;
    /// Takes the data away under the open instances: the database deleted, the server gone.
    fn take_away(&mut self);
    /// Where the data is (a path, a URL): no error may show it.
    fn location(&self) -> String;
    /// Takes every passkey of `user` away behind the store's back (its credential ids with
    /// them), as removing passkeys will: no instance may be open.
    async fn drop_passkeys(&self, user: &UserId);
    /// Makes the session of this family one from before keys (neither bound nor marked
    /// unbound for good), behind the store's back: no instance may be open.
    async fn make_from_before_keys(&self, family: &str);
}

struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    async fn start() -> Self {
        Sqlite(tempfile::tempdir().expect("temp dir"))
    }
    async fn open(&self, policy: SessionPolicy) -> Db {
        Arc::new(SqliteStore::open(self.0.path(), policy).expect("store opens"))
    }
    fn take_away(&mut self) {
        std::fs::remove_dir_all(self.0.path()).unwrap();
    }
    fn location(&self) -> String {
        self.0.path().display().to_string()
    }
    async fn make_from_before_keys(&self, family: &str) {
        let conn = rusqlite::Connection::open(self.0.path().join("tether.db")).unwrap();
        let changed = conn
            .execute(
                "UPDATE sessions SET pop_key = NULL WHERE session_digest = ?1",
                [family],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    async fn drop_passkeys(&self, user: &UserId) {
        let conn = rusqlite::Connection::open(self.0.path().join("tether.db")).unwrap();
        conn.execute("DELETE FROM passkeys WHERE user_id = ?1", [user.as_str()])
            .unwrap();
    }
}

/// `None` once taken away (a server of the test's own stops when dropped).
struct Redis(Option<RedisServer>);

impl Backend for Redis {
    async fn start() -> Self {
        Redis(Some(RedisServer::start().await))
    }
    async fn start_own() -> Self {
        Redis(Some(RedisServer::start_own().await))
    }
    async fn open(&self, policy: SessionPolicy) -> Db {
        let redis = self.0.as_ref().expect("not taken away");
        let options = NodeOptions::new(Duration::from_secs(10));
        let store = RedisStore::connect(&redis.url(), &redis.prefix, policy, options).await;
        Arc::new(store.expect("connects to redis"))
    }
    fn take_away(&mut self) {
        self.0 = None;
    }
    fn location(&self) -> String {
        self.0.as_ref().expect("not taken away").url()
    }
    async fn make_from_before_keys(&self, family: &str) {
        let redis = self.0.as_ref().expect("not taken away");
        unbind_behind_the_store(&mut self.raw().await, &redis.prefix, family).await;
    }
    async fn drop_passkeys(&self, user: &UserId) {
        let redis = self.0.as_ref().expect("not taken away");
        drop_passkeys_behind_the_store(&mut self.raw().await, &redis.prefix, user).await;
    }
}

impl Redis {
    async fn raw(&self) -> ::redis::aio::MultiplexedConnection {
        let redis = self.0.as_ref().expect("not taken away");
        ::redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// Makes the session of this family one from before keys, as `Backend::make_from_before_keys`.
async fn unbind_behind_the_store(
    conn: &mut impl ::redis::aio::ConnectionLike,
    prefix: &str,
    family: &str,
) {
    let removed: i64 = ::redis::cmd("HDEL")
        .arg(format!("{prefix}:{{s:{family}}}:session"))
        .arg("key")
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(removed, 1);
}

/// Takes a user's passkeys and their credential ids away, as `Backend::drop_passkeys`.
async fn drop_passkeys_behind_the_store(
    conn: &mut impl ::redis::aio::ConnectionLike,
    prefix: &str,
    user: &UserId,
) {
    let passkeys = format!("{prefix}:{{u:{}}}:passkeys", user.as_str());
    let creds: Vec<String> = ::redis::cmd("HKEYS")
        .arg(&passkeys)
        .query_async(conn)
        .await
        .unwrap();
    for cred in creds {
        let _: i64 = ::redis::cmd("HDEL")
            .arg(format!("{prefix}:{{{prefix}:d}}:creds"))
            .arg(cred)
            .query_async(conn)
            .await
            .unwrap();
    }
    let _: i64 = ::redis::cmd("DEL")
        .arg(passkeys)
        .query_async(conn)
        .await
        .unwrap();
}

/// A Redis Cluster of three primaries (the test cluster, a prefix of the test's own).
struct OnCluster(RedisCluster);

impl OnCluster {
    async fn raw(&self) -> server::store::redis::RedisConn {
        self.0.connection().await
    }
}

impl Backend for OnCluster {
    async fn start() -> Self {
        OnCluster(RedisCluster::start().await)
    }
    async fn open(&self, policy: SessionPolicy) -> Db {
        let options = NodeOptions::new(Duration::from_secs(10));
        let store = RedisStore::connect_cluster(&self.0.urls, &self.0.prefix, policy, options);
        Arc::new(store.await.expect("connects to the cluster"))
    }
    fn take_away(&mut self) {
        unreachable!("the shared test cluster is not taken away");
    }
    fn location(&self) -> String {
        self.0.urls.join(",")
    }
    async fn make_from_before_keys(&self, family: &str) {
        unbind_behind_the_store(&mut self.raw().await, &self.0.prefix, family).await;
    }
    async fn drop_passkeys(&self, user: &UserId) {
        drop_passkeys_behind_the_store(&mut self.raw().await, &self.0.prefix, user).await;
    }
}

// ---- helpers ----

const HOUR: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn open_with<B: Backend>(backend: &B, idle: Duration, max_age: Duration) -> Db {
    backend.open(SessionPolicy { idle, max_age }).await
}

async fn open<B: Backend>(backend: &B) -> Db {
    open_with(backend, HOUR, 2 * HOUR).await
}

async fn user(store: &Db, name: &str) -> (SessionId, UserId) {
    let created = store
        .create_session(&Username::parse(name).unwrap(), "Firefox on Linux", None)
        .await;
    let (sid, session) = created
        .unwrap()
        .into_session()
        .expect("not a protected name");
    assert_eq!(session.username, name);
    (sid, session.user_id)
}

async fn users<const N: usize>(store: &Db, names: [&str; N]) -> [UserId; N] {
    let mut ids = Vec::new();
    for name in names {
        ids.push(user(store, name).await.1);
    }
    ids.try_into().unwrap()
}

async fn insert(store: &Db, from: &UserId, to: &UserId, text: &str, cid: Option<&str>) -> Stored {
    let message = NewMessage {
        from: from.clone(),
        to: to.clone(),
        content: MessageContent::parse(text, 4000).unwrap(),
        client_id: cid.map(|c| ClientMsgId::parse(c).unwrap()),
    };
    let stored = store.insert_message(message).await.unwrap();
    stored.unwrap_or_else(|| panic!("{text}: refused"))
}

/// Stores a message that must be new, and returns it.
async fn send(store: &Db, from: &UserId, to: &UserId, text: &str) -> Message {
    match insert(store, from, to, text, None).await {
        Stored::New(m) => m,
        other => panic!("{text}: stored as {other:?}"),
    }
}

/// Whether a message to `to` is refused as to an unknown recipient.
async fn refused(store: &Db, from: &UserId, to: &UserId, cid: Option<&str>) -> bool {
    let message = NewMessage {
        from: from.clone(),
        to: to.clone(),
        content: MessageContent::parse("anyone?", 4000).unwrap(),
        client_id: cid.map(|c| ClientMsgId::parse(c).unwrap()),
    };
    store.insert_message(message).await.unwrap().is_none()
}

fn client_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

async fn names(store: &Db) -> Vec<String> {
    let users = store.list_users().await.unwrap();
    users.iter().map(|u| u.username.clone()).collect()
}

async fn all_since(store: &Db, viewer: &UserId) -> Vec<Message> {
    let page = store.messages_since(viewer, 0, 10_000).await.unwrap();
    assert!(!page.has_more);
    page.messages
}

fn assert_ascending(messages: &[Message]) {
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

/// No message, and no more.
const EMPTY: Page = Page {
    messages: Vec::new(),
    has_more: false,
};

fn swept(users: usize, sessions: &[String]) -> Expired {
    Expired {
        users,
        sessions: sessions.to_vec(),
    }
}

// ---- durability before ack ----

/// Everything acked is there for a new instance: users, sessions (and their end), messages
/// (written at the same time too), resend detection, and ids that keep increasing.
async fn durable_before_ack<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (ada_sid, ada) = user(&store, "ada").await;
    let (bob_sid, bob) = user(&store, "bob").await;
    let (gone_sid, _) = user(&store, "gone").await;
    let cid = client_id();
    let first = insert(&store, &ada, &bob, "first", Some(&cid)).await;
    let texts: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    let sent = join_all(texts.iter().map(|text| send(&store, &bob, &ada, text))).await;
    let last_id = sent.iter().map(|m| m.id).max().unwrap();
    assert!(store.delete_session(&gone_sid).await.unwrap());
    drop(store);

    let store = open(&backend).await;
    assert_eq!(names(&store).await, ["ada", "bob", "gone"]);
    let found = store.find_session(&ada_sid).await.unwrap().unwrap();
    assert_eq!((found.user_id, found.username), (ada.clone(), "ada".into()));
    let found = store.find_session(&bob_sid).await.unwrap().unwrap();
    assert_eq!(found.user_id, bob);
    assert_eq!(store.find_session(&gone_sid).await.unwrap(), None);
    let restored = all_since(&store, &bob).await;
    assert_eq!(restored.len(), 51, "every acked message");
    assert_eq!(restored[0], *first.message());
    let again = insert(&store, &ada, &bob, "first", Some(&cid)).await;
    assert_eq!(again, Stored::Duplicate(first.message().clone()));
    let next = send(&store, &ada, &bob, "after").await;
    assert!(next.id > last_id, "ids are never reused");
}

// ---- de-duplication ----

/// A resend (same sender, same client id) is the first copy, whatever else it says; client
/// ids are per sender.
async fn dedup_by_client_id<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b, c] = users(&store, ["a", "b", "c"]).await;
    let cid = client_id();
    let Stored::New(first) = insert(&store, &a, &b, "one", Some(&cid)).await else {
        panic!("the first copy is new")
    };
    assert_eq!(first.client_id.as_deref(), Some(cid.as_str()));
    assert_eq!((&*first.from, &*first.to), (a.as_str(), b.as_str()));
    let duplicate = Stored::Duplicate(first.clone());
    // Resent as is, with other content, to someone else: the first copy.
    for (to, text) in [(&b, "one"), (&b, "edited"), (&c, "one")] {
        assert_eq!(insert(&store, &a, to, text, Some(&cid)).await, duplicate);
    }
    // Even to no one known: a resend is answered, never refused.
    let message = NewMessage {
        from: a.clone(),
        to: UserId::random(),
        content: MessageContent::parse("one", 10).unwrap(),
        client_id: Some(ClientMsgId::parse(&cid).unwrap()),
    };
    assert_eq!(
        store.insert_message(message).await.unwrap(),
        Some(duplicate)
    );
    // Another sender's message with the same client id is its own.
    let other = insert(&store, &b, &a, "two", Some(&cid)).await;
    assert!(
        matches!(other, Stored::New(ref m) if m.id > first.id),
        "{other:?}"
    );
    assert_eq!(texts(&all_since(&store, &a).await), ["one", "two"]);
    assert!(all_since(&store, &c).await.is_empty());
}

/// Duplicates sent at the same time are stored once: one is new, every other is it.
async fn concurrent_duplicates_are_stored_once<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b] = users(&store, ["a", "b"]).await;
    let cid = client_id();
    let stored = join_all((0..16).map(|_| insert(&store, &a, &b, "once", Some(&cid)))).await;
    let new: Vec<_> = stored
        .iter()
        .filter(|s| matches!(s, Stored::New(_)))
        .collect();
    assert_eq!(new.len(), 1, "{stored:?}");
    assert!(stored.iter().all(|s| s.message() == new[0].message()));
    assert_eq!(all_since(&store, &b).await.len(), 1);
}

// ---- ordering ----

/// Ids increase in the order writes are answered, including writes made at the same time;
/// every list is in id order.
async fn ids_increase_and_every_list_is_in_id_order<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b, c] = users(&store, ["a", "b", "c"]).await;
    let mut last = 0;
    for (from, to) in [(&a, &b), (&b, &a), (&c, &a), (&a, &a), (&b, &c)] {
        let m = send(&store, from, to, "one by one").await;
        assert!(m.id > last, "{} after {last}", m.id);
        last = m.id;
    }
    let pairs = [(&a, &b), (&c, &a), (&b, &a)];
    let sent =
        join_all((0..30).map(|i| send(&store, pairs[i % 3].0, pairs[i % 3].1, "at once"))).await;
    let ids: BTreeSet<i64> = sent.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 30, "no id given twice");
    assert!(ids.first().unwrap() > &last, "all written after {last}");

    let everything = all_since(&store, &a).await;
    assert_eq!(everything.len(), 34);
    assert_ascending(&everything);
    let roster = store.conversations(&a, 100, 0, u32::MAX).await.unwrap();
    assert_eq!(roster.messages, everything);
    let history = store.history(&a, &b, None, 100).await.unwrap();
    assert_eq!(history.messages.len(), 22);
    assert_ascending(&history.messages);
}

// ---- paging ----

/// A restore pages through every conversation of the viewer after `since`, oldest first,
/// `has_more` exactly when more follow.
async fn restore_pages_after_since<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b, c, d, e] = users(&store, ["a", "b", "c", "d", "e"]).await;
    let mut ids = Vec::new();
    for (from, to, text) in [
        (&a, &b, "ab0"),
        (&c, &a, "ca0"),
        (&b, &c, "bc"),
        (&a, &b, "ab1"),
        (&a, &a, "aa"),
        (&a, &c, "ac1"),
        (&d, &b, "db"),
        (&b, &a, "ba2"),
    ] {
        ids.push(send(&store, from, to, text).await.id);
    }
    let first = store.messages_since(&a, ids[0], 3).await.unwrap();
    assert_eq!(texts(&first.messages), ["ca0", "ab1", "aa"]);
    assert!(first.has_more);
    let after = first.messages.last().unwrap().id;
    let rest = store.messages_since(&a, after, 3).await.unwrap();
    assert_eq!(
        (texts(&rest.messages), rest.has_more),
        (vec!["ac1", "ba2"], false)
    );
    let exact = store.messages_since(&a, ids[4], 2).await.unwrap();
    assert_eq!(exact, rest, "a page that ends with the last message");
    assert_eq!(store.messages_since(&a, ids[7], 10).await.unwrap(), EMPTY);
    let all_of_b = all_since(&store, &b).await;
    assert_eq!(texts(&all_of_b), ["ab0", "bc", "ab1", "db", "ba2"]);
    // Both of e's conversations hold more than a page after `since`, interleaved: the page is
    // the oldest across both, whichever conversation is read first.
    for (i, to) in [&b, &c, &c, &b, &b, &c].into_iter().enumerate() {
        send(&store, &e, to, &format!("e{i}")).await;
    }
    let page = store.messages_since(&e, ids[7], 2).await.unwrap();
    assert_eq!(texts(&page.messages), ["e0", "e1"]);
    assert!(page.has_more);
}

/// History pages backwards through one conversation, from either side.
async fn history_pages_backwards<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b, c] = users(&store, ["a", "b", "c"]).await;
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        send(&store, from, to, &format!("m{i}")).await;
        send(&store, &a, &c, "other").await;
    }
    let newest = store.history(&b, &a, None, 2).await.unwrap();
    assert_eq!(texts(&newest.messages), ["m3", "m4"]);
    assert!(newest.has_more);
    let before = Some(newest.messages[0].id);
    let older = store.history(&a, &b, before, 2).await.unwrap();
    assert_eq!(
        (texts(&older.messages), older.has_more),
        (vec!["m1", "m2"], true)
    );
    let before = Some(older.messages[0].id);
    let oldest = store.history(&b, &a, before, 10).await.unwrap();
    assert_eq!(
        (texts(&oldest.messages), oldest.has_more),
        (vec!["m0"], false)
    );
    let exact = store.history(&a, &b, None, 5).await.unwrap();
    assert_eq!(exact.messages.len(), 5);
    assert!(!exact.has_more, "a page that ends with the first message");
    assert_eq!(store.history(&b, &c, None, 10).await.unwrap(), EMPTY);
}

/// The roster's messages: the newest `per_peer` of each conversation after `since`, the
/// newest `most` of those; every conversation named, notes to self included.
async fn conversations_are_capped_per_peer_after_since_and_overall<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [a, b, c] = users(&store, ["a", "b", "c"]).await;
    for i in 0..5 {
        send(&store, &a, &b, &format!("ab{i}")).await;
    }
    send(&store, &b, &c, "bc").await;
    send(&store, &c, &a, "ca").await;
    send(&store, &a, &a, "aa").await;
    let seen = store.conversations(&a, 3, 0, u32::MAX).await.unwrap();
    assert_eq!(texts(&seen.messages), ["ab2", "ab3", "ab4", "ca", "aa"]);
    let peers: BTreeSet<_> = seen.peers.iter().collect();
    assert_eq!(peers, [&a, &b, &c].into(), "each conversation once");
    assert_eq!(seen.peers.len(), 3);

    let since = seen.messages[1].id;
    let newer = store.conversations(&a, 3, since, u32::MAX).await.unwrap();
    assert_eq!(texts(&newer.messages), ["ab4", "ca", "aa"]);
    let capped = store.conversations(&a, 3, 0, 2).await.unwrap();
    assert_eq!(
        (texts(&capped.messages), capped.peers.len()),
        (vec!["ca", "aa"], 3)
    );
    let since = seen.messages[4].id;
    let none_newer = store.conversations(&a, 3, since, u32::MAX).await.unwrap();
    assert!(none_newer.messages.is_empty());
    assert_eq!(none_newer.peers.len(), 3, "every conversation still named");
    let nothing = store.conversations(&a, 0, 0, u32::MAX).await.unwrap();
    assert_eq!((nothing.messages.len(), nothing.peers.len()), (0, 3));
    let of_b = store.conversations(&b, 10, 0, u32::MAX).await.unwrap();
    assert_eq!(of_b.messages.len(), 6, "b's own conversations only");
}

// ---- unknown recipients ----

/// A message to an unknown user is refused and writes nothing: no message, no conversation,
/// and the sender's account is still one that never sent anything.
async fn an_unknown_recipient_is_refused_and_nothing_written<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (sid, a) = user(&store, "a").await;
    let stranger = UserId::random();
    assert!(refused(&store, &a, &stranger, None).await);
    assert!(refused(&store, &a, &stranger, Some(&client_id())).await);
    assert!(all_since(&store, &a).await.is_empty());
    let roster = store.conversations(&a, 10, 0, u32::MAX).await.unwrap();
    assert!(roster.peers.is_empty() && roster.messages.is_empty());
    store.delete_session(&sid).await.unwrap();
    let expired = store.expire_accounts(HOUR, 10).await.unwrap();
    assert_eq!(expired.users, 1, "a still never sent a message");
}

// ---- sessions ----

/// A session is found by its secret only, and ends when signed out of, one or everywhere.
async fn sessions_are_found_by_secret_and_ended<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (ada_sid, ada) = user(&store, "ada").await;
    let (bob_sid, bob) = user(&store, "bob").await;
    let found = store.find_session(&ada_sid).await.unwrap().unwrap();
    assert_eq!((found.user_id, found.username), (ada.clone(), "ada".into()));
    let unknown = SessionId::from_client("not-a-session").unwrap();
    assert_eq!(store.find_session(&unknown).await.unwrap(), None);
    assert!(!store.delete_session(&unknown).await.unwrap());
    assert_eq!(names(&store).await, ["ada", "bob"], "sign-up order");

    assert!(store.delete_session(&ada_sid).await.unwrap());
    assert!(!store.delete_session(&ada_sid).await.unwrap(), "once");
    assert_eq!(store.find_session(&ada_sid).await.unwrap(), None);
    assert_eq!(store.delete_user_sessions(&ada).await.unwrap(), 0);
    assert_eq!(store.delete_user_sessions(&bob).await.unwrap(), 1);
    assert_eq!(store.find_session(&bob_sid).await.unwrap(), None);
    assert_eq!(store.delete_user_sessions(&bob).await.unwrap(), 0);
}

/// A user's sessions are its devices: each listed with its label and times, another made for
/// an existing user only, and one ended by its family only by its own user.
async fn devices_are_listed_per_user_and_ended_by_family<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (ada_sid, ada) = user(&store, "ada").await;
    let (bob_sid, bob) = user(&store, "bob").await;
    let (phone, session) = store
        .create_device_session(&ada, "Safari on iOS", 50, None)
        .await
        .unwrap()
        .created()
        .expect("ada exists");
    assert_eq!((&session.user_id, session.username.as_str()), (&ada, "ada"));
    assert_ne!(phone.digest(), ada_sid.digest());
    assert!(store
        .create_device_session(&UserId::random(), "Chrome", 50, None)
        .await
        .unwrap()
        .created()
        .is_none());
    let found = store.find_session(&phone).await.unwrap().unwrap();
    assert_eq!(found.user_id, ada);

    let listed = store.devices(&ada).await.unwrap();
    let labels: BTreeSet<(String, String)> = listed
        .iter()
        .map(|d| (d.family.clone(), d.label.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (ada_sid.digest(), "Firefox on Linux".to_owned()),
        (phone.digest(), "Safari on iOS".to_owned()),
    ]
    .into();
    assert_eq!(labels, expected);
    assert!(listed
        .iter()
        .all(|d| d.created > 0 && d.last_seen >= d.created));
    assert!(
        listed.windows(2).all(|w| w[0].created <= w[1].created),
        "oldest first"
    );
    assert_eq!(store.devices(&bob).await.unwrap().len(), 1);
    assert!(store.devices(&UserId::random()).await.unwrap().is_empty());

    // A touch moves last seen.
    let before = store.devices(&bob).await.unwrap()[0].last_seen;
    sleep(ms(20)).await;
    assert_eq!(
        store.touch_sessions(vec![bob_sid.digest()]).await.unwrap(),
        Touched::default()
    );
    assert!(store.devices(&bob).await.unwrap()[0].last_seen > before);

    // Only ada may end ada's device; an unknown family ends nothing.
    assert!(!store.end_family(&bob, &phone.digest()).await.unwrap());
    assert!(!store
        .end_family(&ada, &SessionId::random().digest())
        .await
        .unwrap());
    assert_eq!(store.devices(&ada).await.unwrap().len(), 2);
    assert!(store.find_session(&phone).await.unwrap().is_some());
    assert!(store.end_family(&ada, &phone.digest()).await.unwrap());
    assert!(
        !store.end_family(&ada, &phone.digest()).await.unwrap(),
        "once"
    );
    assert_eq!(store.find_session(&phone).await.unwrap(), None);
    assert!(store.find_session(&ada_sid).await.unwrap().is_some());
    let left: Vec<String> = store
        .devices(&ada)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.family)
        .collect();
    assert_eq!(left, [ada_sid.digest()]);

    // A label is kept to its bound; ending a message-less account's last session marks it
    // for the account sweep, as a sign-out does.
    let (_, _) = store
        .create_device_session(&bob, &"é".repeat(1000), 50, None)
        .await
        .unwrap()
        .created()
        .unwrap();
    let longest = store
        .devices(&bob)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.label.chars().count())
        .max();
    assert_eq!(longest, Some(server::store::DEVICE_LABEL_MAX));
    assert!(store.end_family(&ada, &ada_sid.digest()).await.unwrap());
    assert_eq!(
        store.expire_accounts(HOUR, 100).await.unwrap(),
        swept(1, &[])
    );
    assert_eq!(names(&store).await, ["bob"]);
    drop(store);
    let reopened = open(&backend).await;
    assert_eq!(reopened.devices(&bob).await.unwrap().len(), 2, "durable");
}

/// A session binds to one key, once (proof of possession, issue #25): a session made with a key
/// is bound from birth; one made without is unbound for good (a copied id must not bind itself
/// to a thief's key: review finding 1, before which it bound to the first key offered); one from
/// before keys binds on first use. The key comes back with the session, a different key never
/// replaces it, racing binds have one winner, and the key lasts as long as the session.
async fn a_session_binds_to_one_key_once<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let key = |seed: u8| {
        let signer = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        PopKey::from_bytes(&signer.verifying_key().to_sec1_bytes()).unwrap()
    };
    let (ada_sid, ada) = user(&store, "ada").await;
    let (bob_sid, _) = user(&store, "bob").await;
    let phone = store
        .create_device_session(&ada, "Safari on iOS", 50, None)
        .await
        .unwrap();
    let NewDevice::Created(phone, _) = phone else {
        panic!("a device session")
    };
    // Made without a key: unbound, and never bound.
    for sid in [&ada_sid, &phone] {
        assert_eq!(
            store.find_session(sid).await.unwrap().unwrap().pop_key,
            None
        );
        assert_eq!(
            store.bind_key(&sid.digest(), &key(1)).await.unwrap(),
            Bind::Never
        );
        assert_eq!(
            store.find_session(sid).await.unwrap().unwrap().pop_key,
            None
        );
    }
    // Made with one: bound from birth, the same for a sign-up and another device.
    let Created::Session(carol_sid, carol) = store
        .create_session(&Username::parse("carol").unwrap(), "", Some(&key(7)))
        .await
        .unwrap()
    else {
        panic!("a sign-up")
    };
    assert_eq!(carol.pop_key, Some(key(7)));
    let NewDevice::Created(carol_phone, _) = store
        .create_device_session(&carol.user_id, "", 50, Some(&key(8)))
        .await
        .unwrap()
    else {
        panic!("a device session")
    };
    for (sid, held) in [(&carol_sid, key(7)), (&carol_phone, key(8))] {
        assert_eq!(
            store.find_session(sid).await.unwrap().unwrap().pop_key,
            Some(held.clone())
        );
        assert_eq!(
            store.bind_key(&sid.digest(), &held).await.unwrap(),
            Bind::AlreadyThis
        );
        assert_eq!(
            store.bind_key(&sid.digest(), &key(1)).await.unwrap(),
            Bind::OtherKey
        );
    }

    // The devices list says which sessions are bound (a passkey add ends the others).
    let carol_devices = store.devices(&carol.user_id).await.unwrap();
    assert_eq!(carol_devices.len(), 2);
    assert!(carol_devices.iter().all(|d| d.bound), "made with keys");
    let ada_devices = store.devices(&ada).await.unwrap();
    assert_eq!(ada_devices.len(), 2);
    assert!(ada_devices.iter().all(|d| !d.bound), "made without");
    // Sessions from before keys bind on first use.
    drop(store);
    backend.make_from_before_keys(&ada_sid.digest()).await;
    backend.make_from_before_keys(&bob_sid.digest()).await;
    let store = open(&backend).await;
    assert_eq!(
        store.find_session(&ada_sid).await.unwrap().unwrap().pop_key,
        None
    );
    assert_eq!(
        store.bind_key(&ada_sid.digest(), &key(1)).await.unwrap(),
        Bind::Bound
    );
    let ada_bound: Vec<(String, bool)> = store
        .devices(&ada)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.family, d.bound))
        .collect();
    assert!(
        ada_bound.contains(&(ada_sid.digest(), true)),
        "bound on first use"
    );
    assert!(ada_bound.contains(&(phone.digest(), false)));
    assert_eq!(
        store.find_session(&ada_sid).await.unwrap().unwrap().pop_key,
        Some(key(1))
    );
    assert_eq!(
        store.bind_key(&ada_sid.digest(), &key(1)).await.unwrap(),
        Bind::AlreadyThis
    );
    assert_eq!(
        store.bind_key(&ada_sid.digest(), &key(2)).await.unwrap(),
        Bind::OtherKey
    );
    assert_eq!(
        store.find_session(&ada_sid).await.unwrap().unwrap().pop_key,
        Some(key(1)),
        "never replaced"
    );
    // Per session: the account's other session and another user's are still unbound.
    assert_eq!(
        store.find_session(&phone).await.unwrap().unwrap().pop_key,
        None
    );
    assert_eq!(
        store.find_session(&bob_sid).await.unwrap().unwrap().pop_key,
        None
    );
    assert_eq!(
        store
            .bind_key(&SessionId::random().digest(), &key(1))
            .await
            .unwrap(),
        Bind::Gone
    );

    // Two binds with different keys at once: one wins, the other changes nothing.
    let racing = join_all([3u8, 4].map(|seed| {
        let store = store.clone();
        let family = bob_sid.digest();
        async move { store.bind_key(&family, &key(seed)).await.unwrap() }
    }))
    .await;
    let mut outcomes = racing.clone();
    outcomes.sort_by_key(|b| format!("{b:?}"));
    assert_eq!(outcomes, [Bind::Bound, Bind::OtherKey], "{racing:?}");
    let winner = if racing[0] == Bind::Bound {
        key(3)
    } else {
        key(4)
    };
    assert_eq!(
        store.find_session(&bob_sid).await.unwrap().unwrap().pop_key,
        Some(winner.clone())
    );

    // A passkey add ends the account's unbound sessions in one step (review finding 1c): those
    // made without a key; the bound ones stay (ada's first, bound on first use, and a tablet's),
    // and so do another account's.
    let NewDevice::Created(tablet, _) = store
        .create_device_session(&ada, "Firefox on Android", 50, Some(&key(5)))
        .await
        .unwrap()
    else {
        panic!("a device session")
    };
    let NewDevice::Created(laptop, _) = store
        .create_device_session(&ada, "Chrome on Linux", 50, None)
        .await
        .unwrap()
    else {
        panic!("a device session")
    };
    let (dora_sid, _) = user(&store, "dora").await;
    let ended: BTreeSet<String> = store.end_unbound(&ada).await.unwrap().into_iter().collect();
    assert_eq!(ended, [phone.digest(), laptop.digest()].into());
    for (sid, live) in [
        (&phone, false),
        (&laptop, false),
        (&ada_sid, true),
        (&tablet, true),
        (&dora_sid, true),
    ] {
        assert_eq!(store.find_session(sid).await.unwrap().is_some(), live);
    }
    assert!(store.end_unbound(&ada).await.unwrap().is_empty(), "once");
    assert!(store.end_unbound(&carol.user_id).await.unwrap().is_empty());

    // Durable, and gone with its session.
    drop(store);
    let store = open(&backend).await;
    assert_eq!(
        store.find_session(&bob_sid).await.unwrap().unwrap().pop_key,
        Some(winner)
    );
    assert!(store.delete_session(&ada_sid).await.unwrap());
    assert_eq!(
        store.bind_key(&ada_sid.digest(), &key(1)).await.unwrap(),
        Bind::Gone
    );
}

// ---- expiry ----

/// Used more often than its idle time, a session lives on; left alone, it ends.
async fn an_unused_session_expires_after_its_idle_time<B: Backend>(backend: B) {
    let store = open_with(&backend, ms(800), HOUR).await;
    let (sid, ada) = user(&store, "ada").await;
    for _ in 0..4 {
        sleep(ms(250)).await;
        let found = store.find_session(&sid).await.unwrap();
        assert_eq!(found.map(|s| s.user_id).as_ref(), Some(&ada));
    }
    sleep(ms(1000)).await;
    assert_eq!(store.find_session(&sid).await.unwrap(), None);
    assert_eq!(store.find_session(&sid).await.unwrap(), None, "for good");
}

/// Past its maximum age a session ends, however recently it was used.
async fn a_session_expires_at_its_maximum_age_even_if_used<B: Backend>(backend: B) {
    let store = open_with(&backend, HOUR, ms(600)).await;
    let (sid, _) = user(&store, "ada").await;
    for _ in 0..2 {
        assert!(store.find_session(&sid).await.unwrap().is_some());
        sleep(ms(200)).await;
    }
    sleep(ms(300)).await;
    assert_eq!(store.find_session(&sid).await.unwrap(), None);
    assert!(
        !store.delete_session(&sid).await.unwrap(),
        "expired is ended"
    );
}

/// The sweep ends sessions past their deadline, each once, named by digest, and never a live
/// one; their message-less accounts go at the next account sweep.
async fn expired_sessions_are_swept_once_by_digest<B: Backend>(backend: B) {
    let store = open_with(&backend, HOUR, ms(1000)).await;
    let (old, _) = user(&store, "old").await;
    sleep(ms(1100)).await;
    let (fresh, _) = user(&store, "fresh").await;
    assert_eq!(store.expire_sessions(100).await.unwrap(), [old.digest()]);
    assert!(store.expire_sessions(100).await.unwrap().is_empty(), "once");
    assert_eq!(store.find_session(&old).await.unwrap(), None);
    assert!(store.find_session(&fresh).await.unwrap().is_some());
    assert_eq!(
        store.expire_accounts(HOUR, 100).await.unwrap(),
        swept(1, &[])
    );
    assert_eq!(names(&store).await, ["fresh"]);
}

/// At most `limit` sessions per sweep.
async fn idle_sessions_are_swept_in_batches<B: Backend>(backend: B) {
    let store = open_with(&backend, ms(200), HOUR).await;
    users(&store, ["u1", "u2", "u3", "u4", "u5"]).await;
    sleep(ms(250)).await;
    assert_eq!(store.expire_sessions(3).await.unwrap().len(), 3);
    assert_eq!(store.expire_sessions(3).await.unwrap().len(), 2);
    assert!(store.expire_sessions(3).await.unwrap().is_empty());
}

/// Accounts that never sent or got a message go when signed out of or idle; the others stay,
/// idle or not, signed out or not, and a deleted account is an unknown recipient.
async fn accounts_without_messages_expire_and_others_stay<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (quiet_sid, quiet) = user(&store, "quiet").await;
    let (_, talker) = user(&store, "talker").await;
    let (listener_sid, listener) = user(&store, "listener").await;
    let (leaver_sid, _) = user(&store, "leaver").await;
    send(&store, &talker, &listener, "hi").await;

    assert!(store.delete_session(&leaver_sid).await.unwrap());
    assert_eq!(
        store.expire_accounts(HOUR, 100).await.unwrap(),
        swept(1, &[])
    );
    assert_eq!(names(&store).await, ["quiet", "talker", "listener"]);

    store.delete_session(&listener_sid).await.unwrap();
    store.delete_user_sessions(&talker).await.unwrap();
    sleep(ms(30)).await;
    let expired = store.expire_accounts(ms(10), 100).await.unwrap();
    assert_eq!(expired, swept(1, &[quiet_sid.digest()]));
    assert_eq!(
        store.expire_accounts(Duration::ZERO, 100).await.unwrap(),
        swept(0, &[])
    );
    assert_eq!(names(&store).await, ["talker", "listener"]);
    assert_eq!(store.find_session(&quiet_sid).await.unwrap(), None);
    assert!(refused(&store, &talker, &quiet, None).await);
    drop(store);
    let reopened = open(&backend).await;
    assert_eq!(names(&reopened).await, ["talker", "listener"]);
    assert_eq!(all_since(&reopened, &listener).await.len(), 1);
}

/// A connected session touched in time outlives its idle time and keeps its account; a gone
/// session is named, and a late touch does not bring one back.
async fn touched_sessions_outlive_their_idle_time_and_keep_their_account<B: Backend>(backend: B) {
    let idle = ms(600);
    let store = open_with(&backend, idle, HOUR).await;
    let (sid, _) = user(&store, "ada").await;
    for _ in 0..4 {
        sleep(ms(200)).await;
        let touched = store.touch_sessions(vec![sid.digest()]).await.unwrap();
        assert_eq!(touched, Touched::default());
        assert!(store.expire_sessions(10).await.unwrap().is_empty());
        assert_eq!(
            store.expire_accounts(idle, 10).await.unwrap(),
            swept(0, &[])
        );
    }
    assert!(store.find_session(&sid).await.unwrap().is_some());
    assert_eq!(
        store.touch_sessions(vec![]).await.unwrap(),
        Touched::default()
    );
    let unknown = SessionId::random().digest();
    let gone = store
        .touch_sessions(vec![unknown.clone()])
        .await
        .unwrap()
        .gone;
    assert_eq!(gone, [unknown]);
    sleep(idle + ms(50)).await;
    let gone = store.touch_sessions(vec![sid.digest()]).await.unwrap().gone;
    assert_eq!(gone, [sid.digest()]);
    assert_eq!(store.find_session(&sid).await.unwrap(), None);
}

// ---- presence ----

/// Sockets are counted per user; a user is online while one is counted.
async fn sockets_are_counted_per_user<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    assert_eq!(store.socket_count(&ada).await.unwrap(), 0);
    assert!(store.online_users().await.unwrap().is_empty());
    assert_eq!(store.socket_connected(&ada).await.unwrap(), 1);
    assert_eq!(store.socket_connected(&ada).await.unwrap(), 2);
    assert_eq!(store.socket_connected(&bob).await.unwrap(), 1);
    assert_eq!(store.socket_count(&ada).await.unwrap(), 2);
    let both = HashSet::from([ada.clone(), bob.clone()]);
    assert_eq!(*store.online_users().await.unwrap(), both);
    let stranger = UserId::random();
    let asked = [ada.clone(), stranger.clone(), bob.clone()];
    assert_eq!(store.online_among(&asked).await.unwrap(), both);
    assert_eq!(
        store.online_among(&asked[..2]).await.unwrap(),
        HashSet::from([ada.clone()])
    );
    assert!(store.online_among(&[]).await.unwrap().is_empty());
    assert_eq!(store.online_count().await.unwrap().users, 2);

    assert_eq!(store.socket_disconnected(&ada).await.unwrap(), Some(1));
    assert_eq!(*store.online_users().await.unwrap(), both);
    assert_eq!(store.socket_disconnected(&ada).await.unwrap(), Some(0));
    assert_eq!(
        store.socket_disconnected(&ada).await.unwrap(),
        None,
        "none left"
    );
    assert_eq!(store.socket_count(&ada).await.unwrap(), 0);
    assert_eq!(store.socket_disconnected(&stranger).await.unwrap(), None);
    assert_eq!(
        *store.online_users().await.unwrap(),
        HashSet::from([bob.clone()])
    );
    assert_eq!(
        store.online_among(&asked).await.unwrap(),
        HashSet::from([bob])
    );
    assert_eq!(store.online_count().await.unwrap().users, 1);
}

/// Sockets counted at the same time each get their own count (what the per-user limit
/// relies on), and of those closing at the same time exactly one sees the user go offline.
async fn sockets_are_counted_atomically<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    let counts = join_all((0..20).map(|_| store.socket_connected(&ada))).await;
    let mut counts: Vec<u32> = counts.into_iter().map(Result::unwrap).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>());
    let left = join_all((0..20).map(|_| store.socket_disconnected(&ada))).await;
    let mut left: Vec<u32> = left.into_iter().map(|l| l.unwrap().unwrap()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..20).collect::<Vec<_>>(), "one went offline");
    assert!(store.online_users().await.unwrap().is_empty());
}

/// With every node alive (or only one node) the heartbeat has nothing to report.
async fn a_lone_node_heartbeat_reports_no_change<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    store.socket_connected(&ada).await.unwrap();
    assert!(store
        .heartbeat_every()
        .is_none_or(|every| every > Duration::ZERO));
    for _ in 0..2 {
        assert!(store.heartbeat().await.unwrap().is_empty());
    }
    assert_eq!(store.socket_count(&ada).await.unwrap(), 1);
}

// ---- read state ----

async fn mark(store: &Db, viewer: &UserId, peer: &UserId, up_to: i64) -> MarkedRead {
    let marked = store.mark_read(viewer, peer, up_to).await.unwrap();
    marked.unwrap_or_else(|| panic!("{peer} is a user"))
}

/// The viewer's unread count of the conversation with `peer` now (a `read` that moves nothing).
async fn unread(store: &Db, viewer: &UserId, peer: &UserId) -> u32 {
    mark(store, viewer, peer, 0).await.status.unread
}

/// Sends `n` messages at once (so SQLite commits them in a few batches), returning the newest.
async fn send_many(store: &Db, from: &UserId, to: &UserId, n: usize) -> Message {
    let texts: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let mut newest = None;
    for chunk in texts.chunks(200) {
        let sent = join_all(chunk.iter().map(|text| send(store, from, to, text))).await;
        newest = sent.into_iter().max_by_key(|m| m.id);
    }
    newest.expect("at least one")
}

fn peers_of(page: &ConversationPage) -> Vec<UserId> {
    page.conversations.iter().map(|c| c.peer.clone()).collect()
}

/// Concurrent `mark_read`s leave the cursor at the furthest of them: it never goes back, and
/// a call that moves nothing writes nothing (its time stays).
async fn a_read_cursor_only_moves_forward_under_concurrent_marks<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(send(&store, &bob, &ada, &format!("b{i}")).await.id);
    }
    // Every id, in an order that is not increasing, all at once.
    let order: Vec<i64> = (0..20).map(|i| ids[(i * 7) % 20]).collect();
    let marked = join_all(order.iter().map(|id| mark(&store, &ada, &bob, *id))).await;
    let newest = *ids.last().unwrap();
    let after = mark(&store, &ada, &bob, 0).await;
    assert_eq!(after.status.cursor.up_to, newest);
    assert!(!after.moved);
    assert_eq!((after.status.unread, after.status.as_of), (0, newest));
    for (asked, got) in order.iter().zip(&marked) {
        assert!(got.status.cursor.up_to >= *asked, "{asked}: {got:?}");
        if got.moved {
            assert_eq!(
                got.status.cursor.up_to, *asked,
                "a move is to what was asked"
            );
        }
    }
    assert!(marked.iter().any(|m| m.moved));
    // Lower again, and the same: nothing moves, nothing is rewritten.
    let at = after.status.cursor.at;
    assert!(at > 0);
    for up_to in [ids[3], newest] {
        let again = mark(&store, &ada, &bob, up_to).await;
        assert!(!again.moved);
        assert_eq!(again.status.cursor, ReadCursor { up_to: newest, at });
    }
    // Cursors are per viewer and conversation.
    assert_eq!(
        mark(&store, &bob, &ada, 0).await.status.cursor,
        ReadCursor::default()
    );
}

/// A cursor past the conversation's newest message stops there; unread counts only what came
/// after it.
async fn a_read_cursor_is_clamped_to_the_newest_message<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob, cy] = users(&store, ["ada", "bob", "cy"]).await;
    let first = send(&store, &bob, &ada, "one").await;
    // Someone else's newer message does not count for this conversation.
    let elsewhere = send(&store, &cy, &bob, "other").await;
    let marked = mark(&store, &ada, &bob, i64::MAX).await;
    assert!(marked.moved);
    assert_eq!(marked.status.cursor.up_to, first.id);
    assert_eq!((marked.status.unread, marked.status.as_of), (0, first.id));
    assert!(marked.status.cursor.at > 0);
    let marked = mark(&store, &ada, &bob, elsewhere.id).await;
    assert!(!marked.moved, "already at the newest");
    let second = send(&store, &bob, &ada, "two").await;
    let now = mark(&store, &ada, &bob, 0).await;
    assert_eq!(
        (now.status.cursor.up_to, now.status.unread, now.status.as_of),
        (first.id, 1, second.id)
    );
    // No conversation: nothing written, all zero; nobody: none.
    let none = mark(&store, &ada, &cy, 5).await;
    assert_eq!((none.moved, none.status), (false, Default::default()));
    // A connect's roster reads the cursors written, and only those.
    let roster = store.conversations(&ada, 10, 0, u32::MAX).await.unwrap();
    assert_eq!(roster.read, [(bob.clone(), first.id)]);
    let of_cy = store.conversations(&cy, 10, 0, u32::MAX).await.unwrap();
    assert_eq!(of_cy.read, []);
    assert!(store
        .mark_read(&ada, &UserId::random(), 1)
        .await
        .unwrap()
        .is_none());
}

/// Unread: the peer's messages after the cursor and after the viewer's own newest message
/// (replying reads what came before), never notes to self, at most `UNREAD_MAX` (`read`) or the
/// cap a conversation page is given.
async fn unread_counts_the_peers_messages_since_the_cursor_and_caps<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    assert_eq!(unread(&store, &ada, &bob).await, 0);
    let first = send(&store, &bob, &ada, "1").await;
    send(&store, &bob, &ada, "2").await;
    send(&store, &bob, &ada, "3").await;
    assert_eq!(unread(&store, &ada, &bob).await, 3);
    assert_eq!(
        unread(&store, &bob, &ada).await,
        0,
        "one's own are never unread"
    );
    assert_eq!(mark(&store, &ada, &bob, first.id).await.status.unread, 2);
    send(&store, &ada, &bob, "a reply").await;
    assert_eq!(unread(&store, &ada, &bob).await, 0, "a reply reads");
    assert_eq!(unread(&store, &bob, &ada).await, 1);
    send(&store, &bob, &ada, "4").await;
    send(&store, &bob, &ada, "5").await;
    assert_eq!(unread(&store, &ada, &bob).await, 2);
    send(&store, &ada, &ada, "a note").await;
    assert_eq!(
        unread(&store, &ada, &ada).await,
        0,
        "notes are never unread"
    );
    let page = store
        .conversation_page(&ada, None, 10, UNREAD_MAX)
        .await
        .unwrap();
    let unread_of: Vec<(UserId, u32)> = page
        .conversations
        .iter()
        .map(|c| (c.peer.clone(), c.unread))
        .collect();
    assert_eq!(unread_of, [(ada.clone(), 0), (bob.clone(), 2)]);
    // The cap.
    let newest = send_many(&store, &bob, &ada, UNREAD_MAX as usize + 5).await;
    let capped = mark(&store, &ada, &bob, 0).await;
    assert_eq!(
        (capped.status.unread, capped.status.as_of),
        (UNREAD_MAX, newest.id)
    );
    let page = store
        .conversation_page(&ada, None, 1, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(page.conversations[0].unread, UNREAD_MAX);
    // Bounded work: the count reads at most the cap's worth of messages.
    assert!(
        page.scanned <= 2 + u64::from(UNREAD_MAX) + 1,
        "{}",
        page.scanned
    );
    // A page counts to the cap it is given (`--unread-count-max`), and reads no more.
    let page = store.conversation_page(&ada, None, 1, 7).await.unwrap();
    assert_eq!(page.conversations[0].unread, 7);
    assert!(page.scanned <= 2 + 7 + 1, "{}", page.scanned);
}

/// The conversation list: the viewer's own conversations only, newest activity first, each with
/// its newest message and the peer's name, paged by `before` (the last one's message id).
async fn conversations_are_listed_by_latest_activity_and_paged<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob, cy, dan, eve] = users(&store, ["ada", "bob", "cy", "dan", "eve"]).await;
    assert_eq!(
        store
            .conversation_page(&ada, None, 10, UNREAD_MAX)
            .await
            .unwrap(),
        ConversationPage {
            conversations: Vec::new(),
            has_more: false,
            scanned: 0
        }
    );
    send(&store, &ada, &bob, "to bob").await;
    send(&store, &cy, &ada, "from cy").await;
    send(&store, &ada, &ada, "note").await;
    send(&store, &dan, &ada, "from dan").await;
    send(&store, &eve, &bob, "not ada's").await;
    let last = send(&store, &bob, &ada, "bob again").await;
    let page = store
        .conversation_page(&ada, None, 10, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(peers_of(&page), [&bob, &dan, &ada, &cy].map(Clone::clone));
    assert!(!page.has_more);
    let top = &page.conversations[0];
    assert_eq!((top.username.as_str(), &top.last), ("bob", &last));
    assert_eq!(page.conversations[2].username, "ada");
    assert_eq!(page.conversations[3].last.content, "from cy");
    assert!(page.scanned >= 4, "{}", page.scanned);

    let first = store
        .conversation_page(&ada, None, 2, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(peers_of(&first), [&bob, &dan].map(Clone::clone));
    assert!(first.has_more);
    let before = Some(first.conversations[1].last.id);
    let second = store
        .conversation_page(&ada, before, 2, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(peers_of(&second), [&ada, &cy].map(Clone::clone));
    assert!(!second.has_more, "a page that ends with the oldest");
    let before = Some(second.conversations[1].last.id);
    let past = store
        .conversation_page(&ada, before, 2, UNREAD_MAX)
        .await
        .unwrap();
    assert!(past.conversations.is_empty() && !past.has_more);
    // New activity moves a conversation to the front.
    send(&store, &ada, &cy, "back to cy").await;
    let page = store
        .conversation_page(&ada, None, 1, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(peers_of(&page), std::slice::from_ref(&cy));
    let of_eve = store
        .conversation_page(&eve, None, 10, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(
        peers_of(&of_eve),
        std::slice::from_ref(&bob),
        "eve's own only"
    );
}

/// Receipts are shared only while both have them on: `mark_read` says what the peer may be
/// told (the seen cursor, when it moved), and the list carries the peer's seen cursor only then
/// (never for notes to self). What was read while either had them off stays unseen once both
/// are on again.
async fn read_receipts_are_shared_only_while_both_have_them_on<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    let m1 = send(&store, &ada, &bob, "1").await;
    send(&store, &ada, &ada, "note").await;
    let marked = mark(&store, &bob, &ada, m1.id).await;
    assert!(marked.moved);
    assert_eq!(marked.seen, Some(marked.status.cursor));
    let bob_seen = marked.status.cursor;
    let note = mark(&store, &ada, &ada, i64::MAX).await;
    assert!(note.moved && note.seen.is_none(), "not to oneself");
    let entry = |page: ConversationPage, peer: &UserId| {
        page.conversations
            .into_iter()
            .find(|c| &c.peer == peer)
            .expect("listed")
    };
    let listed = entry(
        store
            .conversation_page(&ada, None, 10, UNREAD_MAX)
            .await
            .unwrap(),
        &bob,
    );
    assert_eq!(listed.peer_read, Some(marked.status.cursor));
    let note = entry(
        store
            .conversation_page(&ada, None, 10, UNREAD_MAX)
            .await
            .unwrap(),
        &ada,
    );
    assert_eq!(note.peer_read, None);
    assert_eq!(note.read.up_to, note.last.id);

    for (off, other) in [(&ada, &bob), (&bob, &ada)] {
        let change = SettingsChange {
            read_receipts: Some(false),
        };
        store.change_settings(off, change).await.unwrap().unwrap();
        let m = send(&store, other, off, "more").await;
        let marked = mark(&store, off, other, m.id).await;
        assert!(
            marked.moved && marked.seen.is_none(),
            "the one with them off reads"
        );
        let m = send(&store, off, other, "more").await;
        let marked = mark(&store, other, off, m.id).await;
        assert!(marked.moved && marked.seen.is_none(), "the other one reads");
        for viewer in [&ada, &bob] {
            let peer = if viewer == &ada { &bob } else { &ada };
            let listed = entry(
                store
                    .conversation_page(viewer, None, 10, UNREAD_MAX)
                    .await
                    .unwrap(),
                peer,
            );
            assert_eq!(listed.peer_read, None);
            assert!(listed.read.up_to > 0, "one's own cursor is always there");
        }
        let change = SettingsChange {
            read_receipts: Some(true),
        };
        store.change_settings(off, change).await.unwrap().unwrap();
    }
    // Both on again: each is shown where the other's seen cursor stayed, never the reads made
    // meanwhile (bob read ada's messages twice while one of them had receipts off, ada bob's).
    let listed = entry(
        store
            .conversation_page(&ada, None, 10, UNREAD_MAX)
            .await
            .unwrap(),
        &bob,
    );
    assert_eq!(listed.peer_read, Some(bob_seen), "both on again");
    assert!(listed.read.up_to > 0);
    let listed = entry(
        store
            .conversation_page(&bob, None, 10, UNREAD_MAX)
            .await
            .unwrap(),
        &ada,
    );
    assert_eq!(
        listed.peer_read,
        Some(ReadCursor::default()),
        "ada never read shared"
    );
}

/// What the viewer read while receipts were off is never reported: turning them on shows the
/// peer nothing new (reading the same messages again moves nothing either); the next read made
/// with receipts shared is seen, and kept for a new instance.
async fn what_is_read_with_receipts_off_stays_unseen_when_they_are_on_again<B: Backend>(
    backend: B,
) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    let peer_read = async |store: &Db, viewer: &UserId, peer: &UserId| {
        let page = store
            .conversation_page(viewer, None, 10, UNREAD_MAX)
            .await
            .unwrap();
        let listed = page.conversations.into_iter().find(|c| &c.peer == peer);
        listed.expect("listed").peer_read
    };
    let setting = async |store: &Db, user: &UserId, on: bool| {
        let change = SettingsChange {
            read_receipts: Some(on),
        };
        store.change_settings(user, change).await.unwrap().unwrap();
    };
    let m1 = send(&store, &ada, &bob, "1").await;
    let first = mark(&store, &bob, &ada, m1.id).await;
    assert_eq!(first.seen.map(|c| c.up_to), Some(m1.id));
    let seen_first = first.status.cursor;

    // Bob reads with receipts off.
    setting(&store, &bob, false).await;
    let m2 = send(&store, &ada, &bob, "2").await;
    let private = mark(&store, &bob, &ada, m2.id).await;
    assert!(private.moved && private.seen.is_none());
    assert_eq!(private.status.cursor.up_to, m2.id);
    assert_eq!(
        peer_read(&store, &ada, &bob).await,
        None,
        "off: nothing shown"
    );

    // On again: ada sees what she saw before, nothing new, whatever bob reads again.
    setting(&store, &bob, true).await;
    assert_eq!(peer_read(&store, &ada, &bob).await, Some(seen_first));
    for up_to in [m2.id, m1.id, i64::MAX, 0] {
        let again = mark(&store, &bob, &ada, up_to).await;
        assert!(!again.moved && again.seen.is_none(), "{up_to}: {again:?}");
    }
    assert_eq!(peer_read(&store, &ada, &bob).await, Some(seen_first));

    // The same when it is the peer who had them off: ada off while bob reads.
    setting(&store, &ada, false).await;
    let m3 = send(&store, &ada, &bob, "3").await;
    assert!(mark(&store, &bob, &ada, m3.id).await.seen.is_none());
    setting(&store, &ada, true).await;
    assert_eq!(peer_read(&store, &ada, &bob).await, Some(seen_first));

    // The next read made with both on is seen (the cursor covers what came before it).
    let m4 = send(&store, &ada, &bob, "4").await;
    let shared = mark(&store, &bob, &ada, m4.id).await;
    assert!(shared.moved);
    assert_eq!(shared.seen, Some(shared.status.cursor));
    assert_eq!(shared.status.cursor.up_to, m4.id);
    assert_eq!(peer_read(&store, &ada, &bob).await, shared.seen);
    drop(store);

    // Kept as it is for a new instance.
    let store = open(&backend).await;
    assert_eq!(peer_read(&store, &ada, &bob).await, shared.seen);
    setting(&store, &bob, false).await;
    let m5 = send(&store, &ada, &bob, "5").await;
    assert!(mark(&store, &bob, &ada, m5.id).await.seen.is_none());
    setting(&store, &bob, true).await;
    assert_eq!(peer_read(&store, &ada, &bob).await, shared.seen);
}

/// Settings: on by default; a change is kept and says whether it changed anything; unknown
/// users have none to change.
async fn settings_default_on_and_change<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    assert_eq!(store.settings(&ada).await.unwrap(), UserSettings::default());
    assert!(UserSettings::default().read_receipts);
    let off = SettingsChange {
        read_receipts: Some(false),
    };
    let changed = store.change_settings(&ada, off).await.unwrap().unwrap();
    assert!(changed.changed && !changed.settings.read_receipts);
    let again = store.change_settings(&ada, off).await.unwrap().unwrap();
    assert!(!again.changed && !again.settings.read_receipts);
    let nothing = store
        .change_settings(&ada, SettingsChange::default())
        .await
        .unwrap()
        .unwrap();
    assert!(!nothing.changed && !nothing.settings.read_receipts);
    assert!(!store.settings(&ada).await.unwrap().read_receipts);
    assert!(
        store.settings(&bob).await.unwrap().read_receipts,
        "per user"
    );
    let stranger = UserId::random();
    assert_eq!(store.change_settings(&stranger, off).await.unwrap(), None);
    assert_eq!(
        store.settings(&stranger).await.unwrap(),
        UserSettings::default()
    );
}

/// Cursors and settings are there for a new instance.
async fn read_state_and_settings_are_durable<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let [ada, bob] = users(&store, ["ada", "bob"]).await;
    let m = send(&store, &bob, &ada, "hi").await;
    send(&store, &bob, &ada, "there").await;
    let cursor = mark(&store, &ada, &bob, m.id).await.status.cursor;
    let off = SettingsChange {
        read_receipts: Some(false),
    };
    store.change_settings(&bob, off).await.unwrap().unwrap();
    drop(store);

    let store = open(&backend).await;
    let again = mark(&store, &ada, &bob, 0).await;
    assert_eq!((again.status.cursor, again.status.unread), (cursor, 1));
    assert!(!store.settings(&bob).await.unwrap().read_receipts);
    let page = store
        .conversation_page(&ada, None, 10, UNREAD_MAX)
        .await
        .unwrap();
    assert_eq!(page.conversations[0].read, cursor);
}

// ---- health and errors ----

/// The readiness probe writes; once the data is gone it fails, with the backend's error as its
/// cause and no location (path, URL) anywhere in the chain.
async fn a_failing_store_fails_with_its_cause<B: Backend>(_: B) {
    let mut backend = B::start_own().await;
    let store = open(&backend).await;
    store
        .check_ready()
        .await
        .expect("a fresh store takes writes");
    let location = backend.location();
    backend.take_away();
    let failed = tokio::time::timeout(Duration::from_secs(10), store.check_ready()).await;
    let failed = failed
        .expect("fails in time")
        .expect_err("the data is gone");
    let (short, chain) = (failed.to_string(), format!("{failed:#}"));
    assert!(std::error::Error::source(&failed).is_some(), "{chain}");
    assert!(
        chain.len() > short.len() && chain.starts_with(&short),
        "{chain}"
    );
    for shown in [&chain, &format!("{failed:?}")] {
        assert!(!shown.contains(&location), "{location} in {shown}");
    }
}

async fn sign_up(store: &Db, name: &str) -> Created {
    store
        .create_session(&Username::parse(name).unwrap(), "Firefox on Linux", None)
        .await
        .unwrap()
}

/// The names in the directory, oldest first.
async fn listed(store: &Db) -> Vec<String> {
    let users = store.list_users().await.unwrap();
    users.iter().map(|u| u.username.clone()).collect()
}

/// Only the oldest account with a name key may protect it (review h4, finding 2): a newer
/// account whose name reads the same (case, width, look-alike letters) is refused and writes
/// nothing, whatever the order of the attempts. Once the older account is gone (swept), the
/// next oldest may.
async fn only_the_oldest_account_with_a_name_key_may_protect_it<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    let (_, wide) = user(&store, "\u{ff21}\u{ff24}\u{ff21}").await;
    let (_, cyrillic) = user(&store, "\u{430}da").await;
    let (_, bob) = user(&store, "bob").await;
    // `oldest_with_name` names the one `protect` lets protect it, by any spelling.
    for spelling in ["ada", "\u{ff21}\u{ff24}\u{ff21}", "\u{430}da", " ADA "] {
        assert_eq!(
            store.oldest_with_name(spelling).await.unwrap(),
            Some(ada.clone()),
            "{spelling:?}"
        );
    }
    assert_eq!(store.oldest_with_name("nobody").await.unwrap(), None);
    for newer in [&wide, &cyrillic] {
        assert_eq!(
            store
                .protect(newer, passkey("c1"), "Chrome on Linux")
                .await
                .unwrap(),
            Protect::NameTaken
        );
    }
    assert_eq!(store.passkeys_by_name("ada").await.unwrap(), None);
    // Nothing was written: the credential is still free, and the oldest may protect.
    assert_eq!(
        store
            .protect(&ada, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    assert_eq!(
        store
            .protect(&bob, passkey("c2"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected,
        "another name is another key"
    );
    let (owner, _) = store.passkeys_by_name("ADA").await.unwrap().unwrap();
    assert_eq!(owner.user_id, ada);
    // The directory marks the owners only (not the newer same-name accounts), after a restart
    // too.
    let marked = |users: &[server::store::User]| -> Vec<UserId> {
        users
            .iter()
            .filter(|u| u.protected)
            .map(|u| u.user_id.clone())
            .collect()
    };
    assert_eq!(
        marked(&store.list_users().await.unwrap()),
        [ada.clone(), bob.clone()]
    );
    let store = open(&backend).await;
    assert_eq!(
        marked(&store.list_users().await.unwrap()),
        [ada.clone(), bob.clone()]
    );

    // The oldest of a key is swept before anyone protects it: the next oldest may.
    let (nfd_sid, _) = user(&store, "Zoe\u{308}").await;
    let (_, nfc) = user(&store, "Zo\u{eb}").await;
    assert_eq!(
        store
            .protect(&nfc, passkey("z1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::NameTaken,
        "NFC and NFD spellings are one name"
    );
    store.delete_session(&nfd_sid).await.unwrap();
    let swept = store.expire_accounts(HOUR, 100).await.unwrap();
    assert_eq!(swept.users, 1, "the sessionless NFD account only");
    assert_eq!(
        store.oldest_with_name("ZOË").await.unwrap(),
        Some(nfc.clone()),
        "the next oldest, once the oldest is gone"
    );
    assert_eq!(
        store
            .protect(&nfc, passkey("z1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
}

/// A sign-up whose name reads as a protected one is refused in the same step as the insert
/// (review h4, findings 3 and 4): nothing is written, the directory is unchanged.
async fn a_sign_up_with_a_protected_name_key_is_refused_and_writes_nothing<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "Ada").await;
    assert_eq!(
        store
            .protect(&ada, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    let before = listed(&store).await;
    for name in [
        "ada",
        "  ADA ",
        "\u{ff41}\u{ff44}\u{ff41}",
        "\u{430}da",
        "\u{410}D\u{410}",
        "ad\u{3164}a",
    ] {
        assert_eq!(
            sign_up(&store, name).await,
            Created::NameProtected,
            "{name:?}"
        );
    }
    assert_eq!(listed(&store).await, before);
    assert!(matches!(
        sign_up(&store, "adam").await,
        Created::Session(..)
    ));
    drop(store);
    let store = open(&backend).await;
    assert_eq!(
        sign_up(&store, "\u{ff21}da").await,
        Created::NameProtected,
        "after a restart too"
    );
}

fn passkey(cred: &str) -> StoredPasskey {
    StoredPasskey {
        cred_id: cred.to_owned(),
        json: format!("{{\"cred\":\"{cred}\",\"counter\":0}}"),
    }
}

/// The first passkey protects the account's name (any case, trimmed) for good; a second account
/// of the same name cannot claim it, a credential id is registered once across accounts, and
/// all of it outlives a restart. A protected account is never swept, even without messages or
/// sessions.
async fn a_passkey_protects_a_name_once_and_keeps_its_account<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (ada_sid, ada) = user(&store, "Ada").await;
    let (_, ghost) = user(&store, "ada").await;
    let (_, bob) = user(&store, "bob").await;
    assert_eq!(store.passkeys_by_name("ada").await.unwrap(), None);

    assert_eq!(
        store
            .protect(&ada, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    assert_eq!(
        store
            .protect(&ghost, passkey("c2"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::NameTaken
    );
    assert_eq!(
        store
            .protect(&bob, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::CredentialTaken
    );
    assert_eq!(
        store
            .protect(&ada, passkey("c3"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Added
    );
    let unknown = UserId::parse("00000000-0000-4000-8000-000000000000").unwrap();
    assert_eq!(
        store
            .protect(&unknown, passkey("c4"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::UnknownUser
    );
    for name in ["ada", " ADA ", "Ada"] {
        assert_eq!(
            sign_up(&store, name).await,
            Created::NameProtected,
            "{name}"
        );
    }
    assert_eq!(store.passkeys_by_name("bob").await.unwrap(), None);

    let mut changed = passkey("c1");
    changed.json = "{\"counter\":7}".to_owned();
    assert!(store
        .passkey_used(&ada, &passkey("c1"), changed.clone())
        .await
        .unwrap());
    // Someone else's credential is left alone.
    let mut theirs = passkey("c3");
    theirs.json = "{}".to_owned();
    assert!(!store
        .passkey_used(&bob, &passkey("c3"), theirs)
        .await
        .unwrap());

    store.delete_session(&ada_sid).await.unwrap();
    sleep(ms(30)).await;
    let expired = store.expire_accounts(ms(10), 100).await.unwrap();
    assert_eq!(
        expired.users, 2,
        "the ghost and bob go, the protected Ada stays"
    );
    drop(store);
    let store = open(&backend).await;
    let (owner, passkeys) = store
        .passkeys_by_name("ADA")
        .await
        .unwrap()
        .expect("protected");
    assert_eq!(
        (owner.user_id, owner.username.as_str()),
        (ada.clone(), "Ada")
    );
    assert_eq!(passkeys, [changed, passkey("c3")]);
    assert_eq!(sign_up(&store, "ada").await, Created::NameProtected);
    // Its account is still there: a new device session of it can be made.
    assert!(store
        .create_device_session(&ada, "Chrome on Linux", 50, None)
        .await
        .unwrap()
        .created()
        .is_some());
}

/// A ceremony's state is taken once, whoever asks at the same time, and not after its ttl.
async fn a_ceremony_is_taken_once_and_not_after_its_ttl<B: Backend>(backend: B) {
    let store = open(&backend).await;
    store
        .put_ceremony("c-one", "state one".to_owned(), HOUR)
        .await
        .unwrap();
    let takes = join_all((0..8).map(|_| store.take_ceremony("c-one"))).await;
    let taken: Vec<_> = takes.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(taken, ["state one"]);
    assert_eq!(store.take_ceremony("c-one").await.unwrap(), None);
    assert_eq!(store.take_ceremony("never").await.unwrap(), None);

    store
        .put_ceremony("c-short", "short".to_owned(), ms(20))
        .await
        .unwrap();
    store
        .put_ceremony("c-kept", "kept".to_owned(), HOUR)
        .await
        .unwrap();
    sleep(ms(60)).await;
    assert_eq!(store.take_ceremony("c-short").await.unwrap(), None);
    drop(store);
    let store = open(&backend).await;
    assert_eq!(
        store.take_ceremony("c-kept").await.unwrap().as_deref(),
        Some("kept")
    );
}

/// An account holds at most `PASSKEYS_PER_USER_MAX` passkeys: one more writes nothing.
async fn an_account_holds_a_bounded_number_of_passkeys<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    for n in 0..PASSKEYS_PER_USER_MAX {
        let done = store
            .protect(&ada, passkey(&format!("k{n:02}")), "Chrome on Linux")
            .await;
        let want = if n == 0 {
            Protect::Protected
        } else {
            Protect::Added
        };
        assert_eq!(done.unwrap(), want, "passkey {n}");
    }
    assert_eq!(
        store
            .protect(&ada, passkey("one-more"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Full
    );
    let (_, held) = store.passkeys_by_name("ada").await.unwrap().unwrap();
    assert_eq!(held.len(), PASSKEYS_PER_USER_MAX);
    assert!(held.iter().all(|p| p.cred_id != "one-more"));
}

/// Where several refusals apply, every store gives the same one, in the order the contract
/// says: a credential registered already (a retry of a call that succeeded, or another
/// account's) is `CredentialTaken` before a full account is `Full`. (Before, Redis answered a
/// retry `Added`, and SQLite a registered credential on a full account `Full`.)
async fn protect_refuses_alike_in_the_contracts_order<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    let (_, bob) = user(&store, "bob").await;
    assert_eq!(
        store
            .protect(&ada, passkey("a00"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    assert_eq!(
        store
            .protect(&ada, passkey("a00"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::CredentialTaken,
        "a retry of a protect that succeeded"
    );
    for n in 1..PASSKEYS_PER_USER_MAX {
        let done = store
            .protect(&ada, passkey(&format!("a{n:02}")), "Chrome on Linux")
            .await;
        assert_eq!(done.unwrap(), Protect::Added, "passkey {n}");
    }
    assert_eq!(
        store
            .protect(&bob, passkey("b00"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    // Full, and the credential registered: registered comes first, whoever holds it.
    assert_eq!(
        store
            .protect(&ada, passkey("a00"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::CredentialTaken
    );
    assert_eq!(
        store
            .protect(&ada, passkey("b00"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::CredentialTaken
    );
    assert_eq!(
        store
            .protect(&ada, passkey("new"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Full
    );
    let (_, held) = store.passkeys_by_name("ada").await.unwrap().unwrap();
    assert_eq!(held.len(), PASSKEYS_PER_USER_MAX);
    let (_, held) = store.passkeys_by_name("bob").await.unwrap().unwrap();
    assert_eq!(held, [passkey("b00")]);
}

/// A name is protected for good: once every passkey of its account is gone (as removing them
/// will do), the account still holds the name (`Some` with no passkeys, on every store), no
/// other account may claim it, and the account may add a passkey again. (Before, Redis said
/// `None` while SQLite said `Some(account, [])`.)
async fn a_name_stays_its_accounts_when_its_passkeys_are_gone<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "Ada").await;
    let (_, ghost) = user(&store, "ada").await;
    assert_eq!(
        store
            .protect(&ada, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Protected
    );
    drop(store);
    backend.drop_passkeys(&ada).await;
    let store = open(&backend).await;
    assert!(matches!(
        store
            .create_session(&Username::parse("ADA").unwrap(), "Firefox on Linux", None)
            .await
            .unwrap(),
        Created::NameProtected
    ));
    let (owner, held) = store
        .passkeys_by_name("ada")
        .await
        .unwrap()
        .expect("still the account's");
    assert_eq!(
        (owner.user_id, owner.username.as_str()),
        (ada.clone(), "Ada")
    );
    assert_eq!(held, []);
    assert_eq!(
        store
            .protect(&ghost, passkey("c2"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::NameTaken
    );
    assert_eq!(
        store
            .protect(&ada, passkey("c1"), "Chrome on Linux")
            .await
            .unwrap(),
        Protect::Added,
        "the credential is free again and the name the account's"
    );
}

/// A user holds at most `max_sessions` live sessions when one is added for them: past it
/// nothing is written, ending one makes room, an unknown user is told apart, and of adds made
/// at the same time no more succeed than there is room for. (Before, there was no limit.)
async fn device_sessions_are_bounded_per_user<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (first, ada) = user(&store, "ada").await;
    for _ in 0..2 {
        let made = store
            .create_device_session(&ada, "Chrome", 3, None)
            .await
            .unwrap();
        assert!(matches!(made, NewDevice::Created(..)), "{made:?}");
    }
    let made = store
        .create_device_session(&ada, "Chrome", 3, None)
        .await
        .unwrap();
    assert!(matches!(made, NewDevice::TooManySessions), "{made:?}");
    assert_eq!(store.devices(&ada).await.unwrap().len(), 3);
    let unknown = store
        .create_device_session(&UserId::random(), "Chrome", 3, None)
        .await
        .unwrap();
    assert!(matches!(unknown, NewDevice::UnknownUser), "{unknown:?}");

    store.delete_session(&first).await.unwrap();
    let racing =
        join_all((0..8).map(|_| store.create_device_session(&ada, "Safari", 3, None))).await;
    let made = racing
        .into_iter()
        .filter(|r| matches!(r, Ok(NewDevice::Created(..))))
        .count();
    assert_eq!(made, 1, "one place was free");
    assert_eq!(store.devices(&ada).await.unwrap().len(), 3);
}

/// Sessions past their idle time do not count against the limit.
async fn idle_sessions_do_not_count_against_the_session_limit<B: Backend>(backend: B) {
    let store = open_with(&backend, ms(100), HOUR).await;
    let (_, ada) = user(&store, "ada").await;
    let made = store
        .create_device_session(&ada, "Chrome", 2, None)
        .await
        .unwrap();
    assert!(matches!(made, NewDevice::Created(..)), "{made:?}");
    let made = store
        .create_device_session(&ada, "Chrome", 2, None)
        .await
        .unwrap();
    assert!(matches!(made, NewDevice::TooManySessions), "{made:?}");
    sleep(ms(250)).await;
    let made = store
        .create_device_session(&ada, "Chrome", 2, None)
        .await
        .unwrap();
    assert!(matches!(made, NewDevice::Created(..)), "{made:?}");
}

fn counted(cred: &str, counter: u32) -> StoredPasskey {
    StoredPasskey {
        cred_id: cred.to_owned(),
        json: format!("{{\"cred\":\"{cred}\",\"counter\":{counter}}}"),
    }
}

/// `passkey_used` is a compare-and-set: a passkey is replaced only while it is still stored as
/// the sign-in read it, so of sign-ins that raced from the same state exactly one writes, and a
/// stale one never takes a counter back. (Before, every call wrote: the last one won.)
async fn a_passkey_is_replaced_only_while_it_is_as_read<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    let (_, bob) = user(&store, "bob").await;
    store
        .protect(&ada, counted("c1", 0), "Chrome on Linux")
        .await
        .unwrap();
    assert!(store
        .passkey_used(&ada, &counted("c1", 0), counted("c1", 2))
        .await
        .unwrap());
    assert!(
        !store
            .passkey_used(&ada, &counted("c1", 0), counted("c1", 1))
            .await
            .unwrap(),
        "read before the last write: refused"
    );
    let read = counted("c1", 2);
    let racing = join_all((3..11).map(|n| store.passkey_used(&ada, &read, counted("c1", n)))).await;
    let won: Vec<bool> = racing.into_iter().map(Result::unwrap).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = 3 + won.iter().position(|w| *w).unwrap() as u32;
    // Another credential's json, another user, or an unknown credential: nothing written.
    assert!(!store
        .passkey_used(&ada, &counted("c1", winner), counted("c2", 99))
        .await
        .unwrap());
    assert!(!store
        .passkey_used(&bob, &counted("c1", winner), counted("c1", 99))
        .await
        .unwrap());
    assert!(!store
        .passkey_used(&ada, &counted("zz", 0), counted("zz", 1))
        .await
        .unwrap());
    let (_, held) = store.passkeys_by_name("ada").await.unwrap().unwrap();
    assert_eq!(held, [counted("c1", winner)]);
}

/// An account's passkeys are listed oldest first with the browser each was added in and when
/// it was added and last used; removing one is the account's alone and happens once, and
/// removing the last gives the name up: sign-ups with it are let in, the roster's mark goes,
/// and the oldest account with the name may protect it again. (Before, a passkey could not be
/// removed and a name stayed protected for good.)
async fn passkeys_are_listed_and_removing_the_last_gives_the_name_up<B: Backend>(backend: B) {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let store = open(&backend).await;
    let (_, ada) = user(&store, "ada").await;
    let (_, ghost) = user(&store, "Ada").await;
    let (_, bob) = user(&store, "bob").await;
    assert_eq!(
        store.passkeys(&ada).await.unwrap(),
        AccountPasskeys::default()
    );
    let before = now_ms();
    store
        .protect(&ada, passkey("c1"), "Chrome on Linux")
        .await
        .unwrap();
    store
        .protect(&ada, passkey("c2"), "Safari on iOS")
        .await
        .unwrap();
    tokio::time::sleep(ms(3)).await;
    let used = StoredPasskey {
        json: "{\"used\":1}".into(),
        ..passkey("c1")
    };
    assert!(store
        .passkey_used(&ada, &passkey("c1"), used)
        .await
        .unwrap());
    let listed = store.passkeys(&ada).await.unwrap();
    assert!(listed.protected);
    let seen: Vec<(&str, &str)> = listed
        .passkeys
        .iter()
        .map(|p| (p.cred_id.as_str(), p.added_in.as_str()))
        .collect();
    assert_eq!(seen, [("c1", "Chrome on Linux"), ("c2", "Safari on iOS")]);
    for p in &listed.passkeys {
        assert!(p.added >= before && p.added <= now_ms(), "{p:?}");
    }
    assert!(
        listed.passkeys[0].last_used > listed.passkeys[0].added,
        "{listed:?}"
    );
    assert_eq!(listed.passkeys[1].last_used, listed.passkeys[1].added);

    assert_eq!(
        store.remove_passkey(&bob, "c1").await.unwrap(),
        RemovedPasskey::Unknown,
        "another account's"
    );
    let racing = join_all((0..4).map(|_| store.remove_passkey(&ada, "c1"))).await;
    let removed: Vec<RemovedPasskey> = racing.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        removed
            .iter()
            .filter(|r| **r == RemovedPasskey::Removed { protected: true })
            .count(),
        1,
        "{removed:?}"
    );
    assert!(matches!(
        sign_up(&store, "ADA").await,
        Created::NameProtected
    ));
    let marked = |list: &[User]| {
        list.iter()
            .filter(|u| u.protected)
            .map(|u| u.user_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        marked(&store.list_users().await.unwrap()),
        vec![ada.clone()]
    );

    assert_eq!(
        store.remove_passkey(&ada, "c2").await.unwrap(),
        RemovedPasskey::Removed { protected: false }
    );
    assert_eq!(
        store.passkeys(&ada).await.unwrap(),
        AccountPasskeys::default()
    );
    assert_eq!(store.passkeys_by_name("ada").await.unwrap(), None);
    assert_eq!(
        marked(&store.list_users().await.unwrap()),
        Vec::<UserId>::new()
    );
    assert!(matches!(sign_up(&store, "ADA").await, Created::Session(..)));
    assert_eq!(
        store.protect(&ghost, passkey("c3"), "").await.unwrap(),
        Protect::NameTaken,
        "still the oldest's to protect"
    );
    assert_eq!(
        store.protect(&ada, passkey("c1"), "").await.unwrap(),
        Protect::Protected,
        "its credential is free again"
    );
}

// ---- rotation (issue #25 slice 3) ----

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// No cap worth the name (a scenario about the compare-and-set, not the cap).
fn uncapped() -> Reissue {
    Reissue {
        since: 0,
        max: u32::MAX,
    }
}

fn rotated(answer: Rotate) -> SessionId {
    match answer {
        Rotate::Rotated(secret) => secret,
        other => panic!("expected a rotation, got {other:?}"),
    }
}

/// A rotation replaces the current secret only while it is the one expected: of rotations
/// racing from the same secret exactly one wins. The retired secret still finds its session,
/// as retired (with the current one's digest), the family never changes, and retired secrets
/// go with their session.
async fn rotate_secret_is_compare_and_set<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (first, ada) = user(&store, "ada").await;
    let (bob_sid, _) = user(&store, "bob").await;
    let found = store.find_session(&first).await.unwrap().unwrap();
    let family = first.digest();
    assert_eq!(found.family, family);
    assert!(matches!(found.secret, Secret::Current { issued_at } if issued_at > 0));

    let racing = {
        let expect = first.digest();
        join_all((0..8).map(|_| store.rotate_secret(&family, &expect, uncapped()))).await
    };
    let mut won = Vec::new();
    for answer in racing {
        match answer.unwrap() {
            Rotate::Rotated(secret) => won.push(secret),
            Rotate::Moved => {}
            other => panic!("a racing rotation is rotated or moved, not {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "one rotation wins");
    let second = won.pop().unwrap();
    assert_ne!(second.digest(), first.digest());

    let now = store.find_session(&second).await.unwrap().unwrap();
    assert_eq!((now.family.as_str(), &now.user_id), (family.as_str(), &ada));
    assert!(
        matches!(now.secret, Secret::Current { .. }),
        "{:?}",
        now.secret
    );
    let old = store.find_session(&first).await.unwrap().unwrap();
    assert_eq!(old.family, family);
    match &old.secret {
        Secret::Retired {
            current,
            retired_at,
        } => {
            assert_eq!(*current, second.digest());
            assert!(*retired_at > 0);
        }
        other => panic!("the first secret is retired: {other:?}"),
    }
    // Expecting a retired secret moves nothing; the current one rotates again.
    assert!(matches!(
        store
            .rotate_secret(&family, &first.digest(), uncapped())
            .await
            .unwrap(),
        Rotate::Moved
    ));
    let third = rotated(
        store
            .rotate_secret(&family, &second.digest(), uncapped())
            .await
            .unwrap(),
    );
    assert!(matches!(
        store.find_session(&second).await.unwrap().unwrap().secret,
        Secret::Retired { ref current, .. } if *current == third.digest()
    ));
    // Another session is untouched; an unknown family is gone.
    assert!(matches!(
        store.find_session(&bob_sid).await.unwrap().unwrap().secret,
        Secret::Current { .. }
    ));
    assert!(matches!(
        store
            .rotate_secret(&"0".repeat(64), &"0".repeat(64), uncapped())
            .await
            .unwrap(),
        Rotate::Gone
    ));
    // Durable, and the session's devices entry is still its family.
    drop(store);
    let store = open(&backend).await;
    assert!(matches!(
        store.find_session(&third).await.unwrap().unwrap().secret,
        Secret::Current { .. }
    ));
    assert_eq!(store.devices(&ada).await.unwrap()[0].family, family);
    // Ended by its family, every secret with it.
    assert!(store.end_family(&ada, &family).await.unwrap());
    for secret in [&first, &second, &third] {
        assert_eq!(store.find_session(secret).await.unwrap(), None);
    }
    assert!(matches!(
        store
            .rotate_secret(&family, &third.digest(), uncapped())
            .await
            .unwrap(),
        Rotate::Gone
    ));
}

/// At most `max` secrets retired since `since`: past it a rotation writes nothing.
async fn rotations_are_capped_per_window<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (mut secret, _) = user(&store, "ada").await;
    let family = secret.digest();
    let cap = Reissue {
        since: epoch_ms() - 60_000,
        max: 3,
    };
    for _ in 0..3 {
        secret = rotated(
            store
                .rotate_secret(&family, &secret.digest(), cap)
                .await
                .unwrap(),
        );
    }
    assert!(matches!(
        store
            .rotate_secret(&family, &secret.digest(), cap)
            .await
            .unwrap(),
        Rotate::TooMany
    ));
    assert!(matches!(
        store.find_session(&secret).await.unwrap().unwrap().secret,
        Secret::Current { .. }
    ));
    // Retirements before the window do not count.
    let later = Reissue {
        since: epoch_ms() + 1,
        max: 3,
    };
    rotated(
        store
            .rotate_secret(&family, &secret.digest(), later)
            .await
            .unwrap(),
    );
}

/// A sign-in from a new device marks the user's other sessions due (issued at 0), no one
/// else's, and a session whose secret rotated is marked through its family.
async fn other_sessions_are_marked_due<B: Backend>(backend: B) {
    let store = open(&backend).await;
    let (laptop, ada) = user(&store, "ada").await;
    let laptop_family = laptop.digest();
    let (bob_sid, _) = user(&store, "bob").await;
    let laptop = rotated(
        store
            .rotate_secret(&laptop.digest(), &laptop.digest(), uncapped())
            .await
            .unwrap(),
    );
    let (phone, session) = store
        .create_device_session(&ada, "Safari on iOS", 50, None)
        .await
        .unwrap()
        .created()
        .expect("ada exists");
    assert_eq!(
        store
            .mark_rotation_due(&ada, &session.family)
            .await
            .unwrap(),
        1
    );
    let due = |found: Option<server::store::Session>| {
        matches!(found.unwrap().secret, Secret::Current { issued_at: 0 })
    };
    assert!(due(store.find_session(&laptop).await.unwrap()));
    assert!(!due(store.find_session(&phone).await.unwrap()));
    assert!(!due(store.find_session(&bob_sid).await.unwrap()));
    // A refresh of connected sessions says which are marked (by family), so that a connected
    // one rotates without waiting for its next handshake.
    let touched = store
        .touch_sessions(vec![
            laptop_family.clone(),
            session.family.clone(),
            bob_sid.digest(),
        ])
        .await
        .unwrap();
    assert_eq!(
        touched,
        Touched {
            gone: vec![],
            due: vec![laptop_family.clone()]
        }
    );
    // Once rotated, it is no longer marked.
    rotated(
        store
            .rotate_secret(&laptop_family, &laptop.digest(), uncapped())
            .await
            .unwrap(),
    );
    assert_eq!(
        store.touch_sessions(vec![laptop_family]).await.unwrap(),
        Touched::default()
    );
}

/// Every scenario, as a test per store: `contract!` names each store and its backend, and
/// each scenario once.
macro_rules! contract {
    (stores: [$($store:ident => $backend:ty),* $(,)?], scenarios: $scenarios:tt $(,)?) => {
        $(contract!(@store $store, $backend, $scenarios);)*
    };
    (@store $store:ident, $backend:ty, [$($scenario:ident),* $(,)?]) => {
        mod $store {
            use super::Backend;
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(<$backend>::start().await).await;
                }
            )*
        }
    };
}

contract! {
    stores: [
        sqlite => super::Sqlite,
        redis => super::Redis,
    ],
    scenarios: [
        durable_before_ack,
        dedup_by_client_id,
        concurrent_duplicates_are_stored_once,
        ids_increase_and_every_list_is_in_id_order,
        restore_pages_after_since,
        history_pages_backwards,
        conversations_are_capped_per_peer_after_since_and_overall,
        an_unknown_recipient_is_refused_and_nothing_written,
        sessions_are_found_by_secret_and_ended,
        devices_are_listed_per_user_and_ended_by_family,
        a_session_binds_to_one_key_once,
        an_unused_session_expires_after_its_idle_time,
        a_session_expires_at_its_maximum_age_even_if_used,
        expired_sessions_are_swept_once_by_digest,
        idle_sessions_are_swept_in_batches,
        accounts_without_messages_expire_and_others_stay,
        touched_sessions_outlive_their_idle_time_and_keep_their_account,
        sockets_are_counted_per_user,
        sockets_are_counted_atomically,
        a_lone_node_heartbeat_reports_no_change,
        a_read_cursor_only_moves_forward_under_concurrent_marks,
        a_read_cursor_is_clamped_to_the_newest_message,
        unread_counts_the_peers_messages_since_the_cursor_and_caps,
        conversations_are_listed_by_latest_activity_and_paged,
        read_receipts_are_shared_only_while_both_have_them_on,
        what_is_read_with_receipts_off_stays_unseen_when_they_are_on_again,
        settings_default_on_and_change,
        read_state_and_settings_are_durable,
        a_failing_store_fails_with_its_cause,
        a_passkey_protects_a_name_once_and_keeps_its_account,
        only_the_oldest_account_with_a_name_key_may_protect_it,
        a_sign_up_with_a_protected_name_key_is_refused_and_writes_nothing,
        a_ceremony_is_taken_once_and_not_after_its_ttl,
        an_account_holds_a_bounded_number_of_passkeys,
        protect_refuses_alike_in_the_contracts_order,
        a_name_stays_its_accounts_when_its_passkeys_are_gone,
        a_passkey_is_replaced_only_while_it_is_as_read,
        passkeys_are_listed_and_removing_the_last_gives_the_name_up,
        device_sessions_are_bounded_per_user,
        idle_sessions_do_not_count_against_the_session_limit,
        rotate_secret_is_compare_and_set,
        rotations_are_capped_per_window,
        other_sessions_are_marked_due,
    ],
}

// The same scenarios on a Redis Cluster of three primaries (issue #27 item 1: every script stays
// in one slot). Taking the store away is for a Redis of the test's own, not the shared cluster.
contract! {
    stores: [
        redis_cluster => super::OnCluster,
    ],
    scenarios: [
        durable_before_ack,
        dedup_by_client_id,
        concurrent_duplicates_are_stored_once,
        ids_increase_and_every_list_is_in_id_order,
        restore_pages_after_since,
        history_pages_backwards,
        conversations_are_capped_per_peer_after_since_and_overall,
        an_unknown_recipient_is_refused_and_nothing_written,
        sessions_are_found_by_secret_and_ended,
        devices_are_listed_per_user_and_ended_by_family,
        a_session_binds_to_one_key_once,
        an_unused_session_expires_after_its_idle_time,
        a_session_expires_at_its_maximum_age_even_if_used,
        expired_sessions_are_swept_once_by_digest,
        idle_sessions_are_swept_in_batches,
        accounts_without_messages_expire_and_others_stay,
        touched_sessions_outlive_their_idle_time_and_keep_their_account,
        sockets_are_counted_per_user,
        sockets_are_counted_atomically,
        a_lone_node_heartbeat_reports_no_change,
        a_read_cursor_only_moves_forward_under_concurrent_marks,
        a_read_cursor_is_clamped_to_the_newest_message,
        unread_counts_the_peers_messages_since_the_cursor_and_caps,
        conversations_are_listed_by_latest_activity_and_paged,
        read_receipts_are_shared_only_while_both_have_them_on,
        what_is_read_with_receipts_off_stays_unseen_when_they_are_on_again,
        settings_default_on_and_change,
        read_state_and_settings_are_durable,
        a_passkey_protects_a_name_once_and_keeps_its_account,
        only_the_oldest_account_with_a_name_key_may_protect_it,
        a_sign_up_with_a_protected_name_key_is_refused_and_writes_nothing,
        a_ceremony_is_taken_once_and_not_after_its_ttl,
        an_account_holds_a_bounded_number_of_passkeys,
        protect_refuses_alike_in_the_contracts_order,
        a_name_stays_its_accounts_when_its_passkeys_are_gone,
        a_passkey_is_replaced_only_while_it_is_as_read,
        passkeys_are_listed_and_removing_the_last_gives_the_name_up,
        device_sessions_are_bounded_per_user,
        idle_sessions_do_not_count_against_the_session_limit,
        rotate_secret_is_compare_and_set,
        rotations_are_capped_per_window,
        other_sessions_are_marked_due,
    ],
}
