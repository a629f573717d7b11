//! Presence over Redis: which users have sockets, summed over every node, with heartbeats and
//! the sweep of dead nodes. Every key is hash-tagged so that each script touches one Redis
//! Cluster slot (see the layout in the parent module).
//!
//! Each node writes its own absolute count of a user's sockets (from [`LocalPresence`], which
//! it mirrors), one write at a time per user, so a resent or reordered call cannot double or
//! undo a count. A node whose heartbeat expired is claimed by one live node with a lease and
//! swept user by user; a node swept while alive writes its counts again once the sweep is over.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::{lua, Keys, RedisConn, INT};
use crate::domain::UserId;
use crate::store::presence::LocalPresence;
use crate::store::{OnlineCount, PresenceChange, StoreError};

/// The most users one `SMISMEMBER` asks about.
const MEMBERSHIP_CHECK_MAX: usize = 1000;

/// One node's presence in Redis.
pub struct RedisPresence {
    conn: RedisConn,
    keys: Keys,
    scripts: Scripts,
    node: String,
    heartbeat_ttl: Duration,
    /// This node's own socket counts, mirrored so they can be republished after a sweep.
    local: LocalPresence,
    /// One turn at a time per user (by stripe) for this node's presence writes: each writes
    /// the node's absolute count, so the writes for one user must reach Redis in the order
    /// their counts were taken.
    turns: PresenceTurns,
    /// Set when this node's presence in Redis may differ from `local` (a write failed, or a
    /// sweep took it while the node was alive); the next heartbeat republishes it.
    republish: Republish,
    /// Changes found by the heartbeat at join, reported by the first heartbeat after it.
    found_at_join: std::sync::Mutex<Vec<PresenceChange>>,
}

/// See [`RedisPresence::turns`].
struct PresenceTurns {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::hash::RandomState,
}

/// How many users' presence writes can be under way at once on one node (more stripes than
/// writes in flight, so that unrelated users rarely wait for each other).
const PRESENCE_STRIPES: usize = 256;

impl PresenceTurns {
    fn new() -> Self {
        Self {
            stripes: (0..PRESENCE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    async fn take(&self, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let stripe = self.hasher.hash_one(user) as usize % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

/// Why this node's presence must be written again (see [`RedisPresence::republish`]).
#[derive(Debug, Default)]
struct Republish {
    /// A presence write failed: Redis may hold a count this node no longer has.
    repair: std::sync::atomic::AtomicBool,
    /// Another node swept this one while it was alive: its users went offline for everyone
    /// else, and come back ([`PresenceChange::Returned`]) once republished.
    rejoined: std::sync::atomic::AtomicBool,
}

/// How long a node's sweep of a dead node may take before another node takes it over.
const SWEEP_LEASE: Duration = Duration::from_secs(30);

/// How many Redis calls one sweep or republish keeps in flight.
const PRESENCE_CALLS_IN_FLIGHT: usize = 32;

/// Shared by the presence scripts: a user's sockets summed over the nodes in their presence
/// hash (every node that counted a socket of theirs and was not swept since).
const SUM_OVER_NODES: &str = r#"
local function total(presence)
  local sum = 0
  for _, n in ipairs(redis.call('HVALS', presence)) do sum = sum + tonumber(n) end
  return sum
end
"#;

/// Sets this node's (ARGV[1]) socket count of a user to ARGV[2] in their presence hash KEYS[1]
/// (0 removes the field) and returns the user's sockets summed over every node. The count is
/// absolute, so a resent write changes nothing.
const SET_PRESENCE: &str = r#"
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return total(KEYS[1])
"#;

/// Uncounts dead node ARGV[1]'s sockets of a user (presence hash KEYS[1]) and returns the
/// sockets the user has left (whether or not a sweep before uncounted them: a user is reported
/// again rather than missed).
const SWEEP_PRESENCE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
return total(KEYS[1])
"#;

const SOCKET_COUNT: &str = r#"
return total(KEYS[1])
"#;

/// The heartbeat (KEYS[1] the registered nodes, KEYS[2] the sweeps under way: node → when its
/// lease lapses, KEYS[3] the nodes swept with users listed: node → when; all by Redis' clock):
/// refreshes this node's heartbeat key (ARGV[3] .. node) for ARGV[2] ms, registers the node,
/// and claims for a sweep, with a lease of ARGV[4] ms, every other node whose heartbeat
/// expired, every dead node whose sweep's lease lapsed (its sweeper died, or is too slow), and
/// every node swept more than two TTLs ago that is still dead (it may have written after its
/// sweep, alive, and died since). Returns `{rejoined, swept, lease, node1, node2, ...}`:
/// whether this node had been unregistered or swept (it republishes, then clears its mark),
/// whether a sweep of this node is under way, the lease's end, then the nodes to sweep.
const HEARTBEAT: &str = r#"
redis.call('SET', ARGV[3] .. ARGV[1], '1', 'PX', ARGV[2])
local rejoined = redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then rejoined = 1 end
local now = redis_now()
local swept = 0
local held = redis.call('ZSCORE', KEYS[2], ARGV[1])
if held then
  if tonumber(held) > now then swept = 1 else redis.call('ZREM', KEYS[2], ARGV[1]) end
end
local claimed, seen = {}, {}
local function claim(n)
  if not seen[n] and redis.call('EXISTS', ARGV[3] .. n) == 0 then
    seen[n] = true
    table.insert(claimed, n)
  end
end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', int(now))) do claim(n) end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', int(now - 2 * tonumber(ARGV[2])))) do
  if n ~= ARGV[1] then
    claim(n)
    redis.call('ZREM', KEYS[3], n)
  end
end
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. n) == 0 then
    redis.call('SREM', KEYS[1], n)
    claim(n)
  end
end
local lease = int(now + tonumber(ARGV[4]))
local out = {rejoined, swept, lease}
for _, n in ipairs(claimed) do
  redis.call('ZADD', KEYS[2], lease, n)
  table.insert(out, n)
end
return out
"#;

/// Ends the sweep of node ARGV[1] (KEYS[1] the sweeps under way) if it is still under the
/// lease ARGV[2] this sweeper was given (not taken over since); a node that listed users
/// (ARGV[3] > 0) is marked swept (KEYS[2]), to be swept once more later. 1 if it ended it.
const FINISH_SWEEP: &str = r#"
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held or tonumber(held) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], int(redis_now()), ARGV[1])
end
return 1
"#;

/// Drops the presence keys of the layout before hash tags (KEYS[1] its `nodes` set, ARGV[1]
/// the key prefix): nodes of that layout still running register again at their next heartbeat
/// and are not counted by nodes of this one.
const DROP_LEGACY_PRESENCE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. 'presence:' .. n, ARGV[1] .. 'node:' .. n)
end
redis.call('DEL', KEYS[1])
return 1
"#;

struct Scripts {
    set_presence: Script,
    sweep_presence: Script,
    socket_count: Script,
    heartbeat: Script,
    finish_sweep: Script,
    drop_legacy_presence: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            set_presence: lua(&[SUM_OVER_NODES, SET_PRESENCE]),
            sweep_presence: lua(&[SUM_OVER_NODES, SWEEP_PRESENCE]),
            socket_count: super::lua_read(&[SUM_OVER_NODES, SOCKET_COUNT]),
            heartbeat: lua(&[INT, HEARTBEAT]),
            finish_sweep: lua(&[INT, FINISH_SWEEP]),
            drop_legacy_presence: lua(&[DROP_LEGACY_PRESENCE]),
        }
    }
}

impl RedisPresence {
    /// Joins the presence of the nodes on this Redis under `prefix` (dropping the keys of the
    /// layout before hash tags) as a new node with a random id, and beats once.
    pub async fn join(
        conn: RedisConn,
        prefix: &str,
        heartbeat_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let presence = Self {
            conn,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            scripts: Scripts::new(),
            node: uuid::Uuid::new_v4().to_string(),
            heartbeat_ttl,
            local: LocalPresence::default(),
            turns: PresenceTurns::new(),
            republish: Republish::default(),
            found_at_join: std::sync::Mutex::new(Vec::new()),
        };
        // A cluster never held the layout before hash tags (it was refused), and the script
        // names keys of every slot.
        if matches!(presence.conn, RedisConn::Cluster(_)) {
            let found = presence.heartbeat().await?;
            *presence
                .found_at_join
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = found;
            return Ok(presence);
        }
        let dropped: i64 = presence
            .scripts
            .drop_legacy_presence
            .key(presence.keys.legacy_nodes())
            .arg(presence.keys.all())
            .invoke_async(&mut presence.conn())
            .await?;
        if dropped > 0 {
            tracing::info!("dropped the presence keys of the layout before hash tags");
        }
        let found = presence.heartbeat().await?;
        *presence
            .found_at_join
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = found;
        Ok(presence)
    }

    /// This node's id in the presence keys (random per process start).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    pub async fn socket_connected(&self, user: &UserId) -> Result<u32, StoreError> {
        let _turn = self.turns.take(user.as_str()).await;
        let here = self.local.connect(user);
        match self.write(user.as_str(), here).await {
            Ok(total) => Ok(total),
            Err(e) => {
                self.local.disconnect(user);
                self.republish.repair.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    pub async fn socket_disconnected(&self, user: &UserId) -> Result<Option<u32>, StoreError> {
        let _turn = self.turns.take(user.as_str()).await;
        let Some(here) = self.local.disconnect(user) else {
            return Ok(None);
        };
        // The socket is gone whatever Redis answers: a failed write is repaired by the next
        // heartbeat, from `local`.
        match self.write(user.as_str(), here).await {
            Ok(total) => Ok(Some(total)),
            Err(e) => {
                self.republish.repair.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The nodes whose sets of online users count, read at each call (not cached from the
    /// heartbeat, which would leave out a node that joined since the last beat).
    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.conn().smembers(self.keys.nodes()).await?)
    }

    pub async fn online_users(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
        let nodes = self.nodes().await?;
        let per_node = futures_util::future::try_join_all(nodes.iter().map(|node| async move {
            let users: Vec<String> = self.conn().smembers(self.keys.node_users(node)).await?;
            Ok::<_, StoreError>(users)
        }))
        .await?;
        Ok(Arc::new(
            per_node
                .into_iter()
                .flatten()
                .map(UserId::from_store)
                .collect(),
        ))
    }

    /// Which of `users` are in some node's set: one `SMISMEMBER` per node and per
    /// [`MEMBERSHIP_CHECK_MAX`] users, all under way at once.
    pub async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let nodes = self.nodes().await?;
        let checks = nodes.iter().flat_map(|node| {
            users
                .chunks(MEMBERSHIP_CHECK_MAX)
                .map(move |chunk| (self.keys.node_users(node), chunk))
        });
        let answers = futures_util::future::try_join_all(checks.map(|(index, chunk)| async move {
            let member: Vec<bool> = redis::cmd("SMISMEMBER")
                .arg(index)
                .arg(chunk.iter().map(UserId::as_str).collect::<Vec<_>>())
                .query_async(&mut self.conn())
                .await?;
            Ok::<_, StoreError>(chunk.iter().zip(member).filter_map(|(u, m)| m.then_some(u)))
        }))
        .await?;
        Ok(answers.into_iter().flatten().cloned().collect())
    }

    /// The sum of every node's set's size (`SCARD`): a user online on two nodes counts twice;
    /// a check asks every node's set.
    pub async fn online_count(&self) -> Result<OnlineCount, StoreError> {
        let nodes = self.nodes().await?;
        let sizes = futures_util::future::try_join_all(nodes.iter().map(|node| async move {
            let size: usize = self.conn().scard(self.keys.node_users(node)).await?;
            Ok::<_, StoreError>(size)
        }))
        .await?;
        Ok(OnlineCount {
            users: sizes.into_iter().sum(),
            check_cost: nodes.len().max(1),
        })
    }

    pub async fn socket_count(&self, user: &UserId) -> Result<u32, StoreError> {
        let total: i64 = self
            .scripts
            .socket_count
            .key(self.keys.presence(user.as_str()))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(total.max(0) as u32)
    }

    /// Proves this node alive, sweeps the dead nodes it claimed, and republishes this node's
    /// presence if it may differ in Redis. Only the heartbeat itself failing is an error: a
    /// sweep or a republish that fails is logged and tried again later, and the changes found
    /// so far are returned.
    pub async fn heartbeat(&self) -> Result<Vec<PresenceChange>, StoreError> {
        let reply: Vec<redis::Value> = match self
            .scripts
            .heartbeat
            .key(self.keys.nodes())
            .key(self.keys.sweeping())
            .key(self.keys.swept())
            .arg(&self.node)
            .arg(self.heartbeat_ttl.as_millis() as u64)
            .arg(self.keys.heartbeat_prefix())
            .arg(SWEEP_LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                // Its answer may be lost (that this node had been swept, say), or Redis may be
                // back empty after a restart: write everything again once it answers.
                self.republish.repair.store(true, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let mut values = reply.into_iter();
        let mut number = || -> Result<i64, StoreError> {
            let value: Option<i64> = values.next().map(redis::from_redis_value).transpose()?;
            Ok(value.unwrap_or(0))
        };
        let (rejoined, being_swept, lease) = (number()? == 1, number()? == 1, number()?);
        let dead = values
            .map(redis::from_redis_value)
            .collect::<Result<Vec<String>, _>>()?;
        if rejoined {
            self.republish.rejoined.store(true, Ordering::Relaxed);
        }
        let mut changes =
            std::mem::take(&mut *self.found_at_join.lock().unwrap_or_else(|e| e.into_inner()));
        for node in &dead {
            self.sweep(node, lease, &mut changes).await;
        }
        // A sweep of this node still under way would undo what is republished: wait for it.
        if !being_swept {
            match self.republish().await {
                Ok(back) => changes.extend(back),
                Err(e) => tracing::warn!(
                    node = %self.node,
                    error = %e,
                    "could not republish this node's presence; trying again at the next heartbeat"
                ),
            }
        }
        Ok(changes)
    }

    /// Writes this node's count of the user's sockets (`here`, taken from `local` in the
    /// user's turn) and returns the user's sockets over every node. The node's index lists
    /// the user before any count of theirs is written (even after a sweep of this node emptied
    /// the index) and is cleared after their last is, so a sweep of this node finds every user
    /// it counted. Failing to clear it is left to the next heartbeat's repair: the count is
    /// written, and the caller must hear of it.
    async fn write(&self, user: &str, here: u32) -> Result<u32, StoreError> {
        let index = self.keys.node_users(&self.node);
        if here > 0 {
            let _: i64 = self.conn().sadd(&index, user).await?;
        }
        let total: i64 = self
            .scripts
            .set_presence
            .key(self.keys.presence(user))
            .arg(&self.node)
            .arg(here)
            .invoke_async(&mut self.conn())
            .await?;
        if here == 0 {
            if let Err(e) = self.conn().srem::<_, _, i64>(&index, user).await {
                tracing::warn!(node = %self.node, error = %e, "could not update this node's presence index");
                self.republish.repair.store(true, Ordering::Relaxed);
            }
        }
        Ok(total.max(0) as u32)
    }

    /// Uncounts a dead node's sockets, user by user, into `changes`: every user its index
    /// lists, until the user is unlisted (so a user a sweeper that died had uncounted is
    /// reported again: a repeated "offline" is harmless, a missing one is not). The sweep ends,
    /// and lets the node republish, only once every user is done and only if it still holds
    /// the lease; otherwise another heartbeat takes it over once the lease lapses.
    async fn sweep(&self, node: &str, lease: i64, changes: &mut Vec<PresenceChange>) {
        use futures_util::StreamExt;
        let index = self.keys.node_users(node);
        let users: Vec<String> = match self.conn().smembers(&index).await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(dead = %node, error = %e, "could not read a dead node's presence");
                return;
            }
        };
        let listed = users.len();
        let done: Vec<(Option<PresenceChange>, bool)> = futures_util::stream::iter(users)
            .map(|user| {
                let index = &index;
                async move {
                    let left: Result<i64, _> = self
                        .scripts
                        .sweep_presence
                        .key(self.keys.presence(&user))
                        .arg(node)
                        .invoke_async(&mut self.conn())
                        .await;
                    let Ok(left) = left else {
                        return (None, false);
                    };
                    let unlisted = self.conn().srem::<_, _, i64>(index, &user).await.is_ok();
                    let change = PresenceChange::Left {
                        user: UserId::from_store(user),
                        sockets_left: left.max(0) as u32,
                    };
                    (Some(change), unlisted)
                }
            })
            .buffer_unordered(PRESENCE_CALLS_IN_FLIGHT)
            .collect()
            .await;
        let mut failed = 0;
        for (change, unlisted) in done {
            changes.extend(change);
            failed += usize::from(!unlisted);
        }
        if failed > 0 {
            tracing::warn!(dead = %node, users = failed, "could not sweep every user of a dead node; another heartbeat takes it over");
            return;
        }
        let finished: Result<i64, _> = self
            .scripts
            .finish_sweep
            .key(self.keys.sweeping())
            .key(self.keys.swept())
            .arg(node)
            .arg(lease)
            .arg(listed)
            .invoke_async(&mut self.conn())
            .await;
        match finished {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(dead = %node, "a sweep outlasted its lease; another heartbeat took it over")
            }
            Err(e) => tracing::warn!(dead = %node, error = %e, "could not end a sweep"),
        }
    }

    /// Writes this node's presence again from `local`, if it may differ in Redis: for every
    /// user it counts and every user its index lists (a count Redis may still hold), in the
    /// user's turn, as [`RedisPresence::write`] would. After a sweep of this node, its users
    /// are reported back.
    async fn republish(&self) -> Result<Vec<PresenceChange>, StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let rejoined = self.republish.rejoined.swap(false, Ordering::Relaxed);
        let repair = self.republish.repair.swap(false, Ordering::Relaxed);
        if !rejoined && !repair {
            return Ok(Vec::new());
        }
        let result = async {
            let index = self.keys.node_users(&self.node);
            let listed: Vec<String> = self.conn().smembers(&index).await?;
            let mut users: HashSet<String> = listed.into_iter().collect();
            users.extend(
                self.local
                    .counts()
                    .into_iter()
                    .map(|(user, _)| user.as_str().to_owned()),
            );
            let back: Vec<Option<UserId>> = futures_util::stream::iter(users)
                .map(|user| async move {
                    let _turn = self.turns.take(&user).await;
                    let user = UserId::from_store(user);
                    let here = self.local.count(&user);
                    self.write(user.as_str(), here).await?;
                    Ok::<_, StoreError>((here > 0).then_some(user))
                })
                .buffer_unordered(PRESENCE_CALLS_IN_FLIGHT)
                .try_collect()
                .await?;
            Ok::<_, StoreError>(back.into_iter().flatten().collect::<Vec<_>>())
        }
        .await;
        if rejoined && result.is_ok() {
            // Republished: this node's mark as swept can go (a failure leaves it for the next
            // heartbeat, which then republishes again).
            if let Err(e) = self
                .conn()
                .zrem::<_, _, i64>(self.keys.swept(), &self.node)
                .await
            {
                tracing::warn!(node = %self.node, error = %e, "could not clear this node's mark as swept");
            }
        }
        match result {
            Ok(back) if rejoined => {
                if !back.is_empty() {
                    tracing::warn!(
                        node = %self.node,
                        users = back.len(),
                        "this node's presence had expired; republished it"
                    );
                }
                Ok(back
                    .into_iter()
                    .map(|user| PresenceChange::Returned { user })
                    .collect())
            }
            Ok(_) => Ok(Vec::new()),
            Err(e) => {
                // Try again at the next heartbeat, for the same reasons.
                self.republish
                    .rejoined
                    .fetch_or(rejoined, Ordering::Relaxed);
                self.republish.repair.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}
