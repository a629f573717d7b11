//! The Redis backend, for several nodes sharing one Redis (7 or newer, standalone or behind
//! Sentinel; not Redis Cluster, because the scripts below name keys they compute).
//!
//! Layout, every key under `{prefix}:`:
//! - `usernames` hash userID → name; `users` list of `[userID, name]` JSON in sign-up order;
//! - `session:{sha256(secret)}` hash (user, name, created) whose TTL is the idle timeout,
//!   refreshed on every use; `user:{id}:sessions` set of digests for "sign out everywhere";
//! - `msg:seq` counter (message ids); `messages` hash id → the wire JSON of the message;
//!   `inbox:{user}` and `conv:{a}|{b}` sorted sets of ids (score = id); `peers:{user}` set;
//!   `dedupe:{user}` hash clientId → id. One Lua script checks the recipient, de-duplicates,
//!   takes the id and writes all of it atomically, before the caller acks;
//! - presence per node: `presence:{node}` hash userID → sockets on that node; `node:{node}` a
//!   heartbeat key with a TTL; `nodes` set. A user's socket count is the sum over nodes. A node
//!   whose heartbeat expired is swept by whichever live node sees it first (atomically, so once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use protocol::payloads::Message;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::presence::LocalPresence;
use super::sqlite::SessionPolicy;
use super::{
    cut_to_page, now_ms, Conversations, NewMessage, Page, PresenceChange, Session, Store,
    StoreError, Stored, User,
};
use crate::domain::{SessionId, UserId, Username};

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<redis::ParsingError> for StoreError {
    fn from(e: redis::ParsingError) -> Self {
        StoreError::Unavailable(format!("unexpected reply from redis: {e}"))
    }
}

/// Key names, all under one prefix so several deployments can share a Redis.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
    fn usernames(&self) -> String {
        self.key("usernames")
    }
    fn users(&self) -> String {
        self.key("users")
    }
    fn session(&self, digest: &str) -> String {
        self.key(&format!("session:{digest}"))
    }
    fn user_sessions(&self, user: &str) -> String {
        self.key(&format!("user:{user}:sessions"))
    }
    fn message_seq(&self) -> String {
        self.key("msg:seq")
    }
    fn messages(&self) -> String {
        self.key("messages")
    }
    fn dedupe(&self, user: &str) -> String {
        self.key(&format!("dedupe:{user}"))
    }
    fn inbox(&self, user: &str) -> String {
        self.key(&format!("inbox:{user}"))
    }
    fn conversation(&self, a: &str, b: &str) -> String {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.key(&format!("conv:{lo}|{hi}"))
    }
    fn peers(&self, user: &str) -> String {
        self.key(&format!("peers:{user}"))
    }
    fn nodes(&self) -> String {
        self.key("nodes")
    }
    /// Prefix of the per-node presence hashes (the scripts append the node id).
    fn presence_prefix(&self) -> String {
        self.key("presence:")
    }
    /// Prefix of the per-node heartbeat keys.
    fn heartbeat_prefix(&self) -> String {
        self.key("node:")
    }
}

/// Creates the user and its session, unless either id is taken (then 0: draw again).
const CREATE_SESSION: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'user', ARGV[1], 'name', ARGV[2], 'created', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[6])
return 1
"#;

/// Stores a message: nil for an unknown recipient, `{0, json}` for a resend of a client id
/// already stored, `{1, json}` for a new message.
const INSERT_MESSAGE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
if ARGV[2] ~= '' then
  local existing = redis.call('HGET', KEYS[4], ARGV[2])
  if existing then return {0, redis.call('HGET', KEYS[3], existing)} end
end
local id = redis.call('INCR', KEYS[2])
local json = '{"id":' .. id .. ',' .. ARGV[3]
redis.call('HSET', KEYS[3], id, json)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[4], ARGV[2], id) end
redis.call('ZADD', KEYS[5], id, id)
redis.call('ZADD', KEYS[6], id, id)
redis.call('ZADD', KEYS[7], id, id)
redis.call('SADD', KEYS[8], ARGV[1])
redis.call('SADD', KEYS[9], ARGV[4])
return {1, json}
"#;

/// Shared by the presence scripts: a user's sockets summed over every registered node.
const SUM_OVER_NODES: &str = r#"
local function total(nodes_key, prefix, user)
  local sum = 0
  for _, n in ipairs(redis.call('SMEMBERS', nodes_key)) do
    sum = sum + tonumber(redis.call('HGET', prefix .. n, user) or 0)
  end
  return sum
end
"#;

const SOCKET_CONNECTED: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', ARGV[3] .. ARGV[1], ARGV[2], 1)
return total(KEYS[1], ARGV[3], ARGV[2])
"#;

const SOCKET_DISCONNECTED: &str = r#"
local key = ARGV[3] .. ARGV[1]
local here = tonumber(redis.call('HGET', key, ARGV[2]) or 0)
if here <= 0 then return -1 end
if here == 1 then redis.call('HDEL', key, ARGV[2]) else redis.call('HINCRBY', key, ARGV[2], -1) end
return total(KEYS[1], ARGV[3], ARGV[2])
"#;

const SOCKET_COUNT: &str = r#"
return total(KEYS[1], ARGV[2], ARGV[1])
"#;

const ONLINE_USERS: &str = r#"
local seen, out = {}, {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, u in ipairs(redis.call('HKEYS', ARGV[1] .. n)) do
    if not seen[u] then seen[u] = true; table.insert(out, u) end
  end
end
return out
"#;

/// The heartbeat: refreshes this node's key, (re)registers it, and sweeps every node whose
/// heartbeat expired. Returns `{rejoined, user1, left1, user2, left2, ...}`: whether this node
/// had itself been swept, then each user who had sockets on a swept node with the sockets left.
const HEARTBEAT: &str = r#"
redis.call('SET', ARGV[4] .. ARGV[1], '1', 'PX', ARGV[2])
local rejoined = redis.call('SADD', KEYS[1], ARGV[1])
local affected = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. n) == 0 then
    for _, u in ipairs(redis.call('HKEYS', ARGV[3] .. n)) do table.insert(affected, u) end
    redis.call('DEL', ARGV[3] .. n)
    redis.call('SREM', KEYS[1], n)
  end
end
local out = {rejoined}
for _, u in ipairs(affected) do
  table.insert(out, u)
  table.insert(out, total(KEYS[1], ARGV[3], u))
end
return out
"#;

/// Republishes this node's own counts after it was swept while alive (a long pause or a
/// partition): `ARGV` = node, then user/count pairs.
const REPUBLISH: &str = r#"
local key = ARGV[2] .. ARGV[1]
redis.call('DEL', key)
for i = 3, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
return 1
"#;

struct Scripts {
    create_session: Script,
    insert_message: Script,
    socket_connected: Script,
    socket_disconnected: Script,
    socket_count: Script,
    online_users: Script,
    heartbeat: Script,
    republish: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_total = |body: &str| Script::new(&format!("{SUM_OVER_NODES}\n{body}"));
        Self {
            create_session: Script::new(CREATE_SESSION),
            insert_message: Script::new(INSERT_MESSAGE),
            socket_connected: with_total(SOCKET_CONNECTED),
            socket_disconnected: with_total(SOCKET_DISCONNECTED),
            socket_count: with_total(SOCKET_COUNT),
            online_users: Script::new(ONLINE_USERS),
            heartbeat: with_total(HEARTBEAT),
            republish: Script::new(REPUBLISH),
        }
    }
}

/// How this node takes part in cluster presence.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// A node whose heartbeat is older than this is dead: its users' sockets are uncounted.
    pub heartbeat_ttl: Duration,
}

impl NodeOptions {
    /// How often to beat: three times per TTL, so one late beat does not kill a live node.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_ttl / 3
    }
}

pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    policy: SessionPolicy,
    node: String,
    options: NodeOptions,
    /// This node's own socket counts, mirrored so they can be republished after a sweep.
    local: LocalPresence,
    /// The user directory as last read: the list only grows, so a refresh reads the tail.
    directory: Mutex<Arc<Vec<User>>>,
}

impl RedisStore {
    /// Connects (the connection reconnects by itself afterwards) and registers this node.
    pub async fn connect(
        url: &str,
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        let store = Self {
            conn,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            scripts: Scripts::new(),
            policy,
            node: uuid::Uuid::new_v4().to_string(),
            options,
            local: LocalPresence::default(),
            directory: Mutex::new(Arc::new(Vec::new())),
        };
        store.heartbeat().await?;
        Ok(store)
    }

    /// This node's id in the presence keys (random per process start).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn read_messages(&self, ids: &[i64]) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.messages())
            .arg(ids)
            .query_async(&mut self.conn())
            .await?;
        raw.into_iter()
            .flatten()
            .map(|json| parse_message(&json))
            .collect()
    }
}

fn parse_message(json: &str) -> Result<Message, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Unavailable(format!("unreadable message in redis: {e}")))
}

/// The wire JSON of a message after its `"id":N,` (the script prepends the id it takes).
fn json_after_id(message: &Message) -> String {
    let json = serde_json::to_string(message).expect("a message always serializes");
    let prefix = format!("{{\"id\":{},", message.id);
    json.strip_prefix(&prefix)
        .expect("`id` is the first field of Message")
        .to_owned()
}

#[async_trait]
impl Store for RedisStore {
    async fn create_session(
        &self,
        username: &Username,
    ) -> Result<(SessionId, Session), StoreError> {
        let name = username.as_str().to_owned();
        // Ids are 122 random bits; the script still checks both are new and we draw again.
        for _ in 0..8 {
            let user_id = UserId::random();
            let session_id = SessionId::random();
            let digest = session_id.digest();
            let entry = serde_json::to_string(&(user_id.as_str(), &name))
                .expect("strings always serialize");
            let created: i64 = self
                .scripts
                .create_session
                .key(self.keys.usernames())
                .key(self.keys.users())
                .key(self.keys.session(&digest))
                .key(self.keys.user_sessions(user_id.as_str()))
                .arg(user_id.as_str())
                .arg(&name)
                .arg(entry)
                .arg(now_ms())
                .arg(self.policy.idle.as_millis() as u64)
                .arg(&digest)
                .invoke_async(&mut self.conn())
                .await?;
            if created == 1 {
                return Ok((
                    session_id,
                    Session {
                        user_id,
                        username: name,
                    },
                ));
            }
        }
        Err(StoreError::Unavailable(
            "could not draw unused ids".to_owned(),
        ))
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let key = self.keys.session(&id.digest());
        let idle_ms = self.policy.idle.as_millis() as u64;
        // Read and refresh the idle TTL in one round trip (refreshing a missing key is a no-op).
        let ((user, name, created), _): ((Option<String>, Option<String>, Option<i64>), i64) =
            redis::pipe()
                .cmd("HMGET")
                .arg(&key)
                .arg(&["user", "name", "created"])
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(idle_ms)
                .query_async(&mut self.conn())
                .await?;
        let (Some(user), Some(name), Some(created)) = (user, name, created) else {
            return Ok(None);
        };
        if now_ms() - created > self.policy.max_age.as_millis() as i64 {
            self.delete_session(id).await?;
            return Ok(None);
        }
        Ok(Some(Session {
            user_id: UserId::from_store(user),
            username: name,
        }))
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        let digest = id.digest();
        let key = self.keys.session(&digest);
        let mut conn = self.conn();
        let user: Option<String> = conn.hget(&key, "user").await?;
        let deleted: i64 = conn.del(&key).await?;
        if let Some(user) = user {
            let _: i64 = conn.srem(self.keys.user_sessions(&user), &digest).await?;
        }
        Ok(deleted > 0)
    }

    async fn delete_user_sessions(&self, user: &UserId) -> Result<usize, StoreError> {
        let set = self.keys.user_sessions(user.as_str());
        let mut conn = self.conn();
        let digests: Vec<String> = conn.smembers(&set).await?;
        if digests.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = digests.iter().map(|d| self.keys.session(d)).collect();
        let (deleted, _): (usize, i64) = redis::pipe()
            .atomic()
            .del(&keys)
            .del(&set)
            .query_async(&mut conn)
            .await?;
        Ok(deleted)
    }

    async fn list_users(&self) -> Result<Arc<Vec<User>>, StoreError> {
        let known = self
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let tail: Vec<String> = self
            .conn()
            .lrange(self.keys.users(), known as isize, -1)
            .await?;
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        // Another call may have appended meanwhile; only add what is still missing.
        let skip = directory.len() - known;
        if tail.len() > skip {
            let users = Arc::make_mut(&mut directory);
            for entry in &tail[skip..] {
                let (user_id, username): (String, String) = serde_json::from_str(entry)
                    .map_err(|e| StoreError::Unavailable(format!("unreadable user entry: {e}")))?;
                users.push(User {
                    user_id: UserId::from_store(user_id),
                    username,
                });
            }
        }
        Ok(directory.clone())
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Option<Stored>, StoreError> {
        let from = message.from.as_str();
        let to = message.to.as_str();
        let client_id = message.client_id.as_ref().map(|c| c.as_str().to_owned());
        let draft = Message {
            id: 0,
            ts: now_ms(),
            content: message.content.as_str().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            client_id: client_id.clone(),
        };
        let result: Option<(i64, String)> = self
            .scripts
            .insert_message
            .key(self.keys.usernames())
            .key(self.keys.message_seq())
            .key(self.keys.messages())
            .key(self.keys.dedupe(from))
            .key(self.keys.inbox(from))
            .key(self.keys.inbox(to))
            .key(self.keys.conversation(from, to))
            .key(self.keys.peers(from))
            .key(self.keys.peers(to))
            .arg(to)
            .arg(client_id.unwrap_or_default())
            .arg(json_after_id(&draft))
            .arg(from)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match result {
            None => None,
            Some((1, json)) => Some(Stored::New(parse_message(&json)?)),
            Some((_, json)) => Some(Stored::Duplicate(parse_message(&json)?)),
        })
    }

    async fn conversations(
        &self,
        viewer: &UserId,
        per_peer: u32,
        since: i64,
    ) -> Result<Conversations, StoreError> {
        let peers: Vec<String> = self
            .conn()
            .smembers(self.keys.peers(viewer.as_str()))
            .await?;
        let mut messages = Vec::new();
        if !peers.is_empty() && per_peer > 0 {
            let mut pipe = redis::pipe();
            for peer in &peers {
                pipe.zrevrangebyscore_limit(
                    self.keys.conversation(viewer.as_str(), peer),
                    "+inf",
                    format!("({since}"),
                    0,
                    per_peer as isize,
                );
            }
            let per_conversation: Vec<Vec<i64>> = pipe.query_async(&mut self.conn()).await?;
            let mut ids: Vec<i64> = per_conversation.into_iter().flatten().collect();
            ids.sort_unstable();
            ids.dedup();
            messages = self.read_messages(&ids).await?;
        }
        Ok(Conversations {
            peers: peers.into_iter().map(UserId::from_store).collect(),
            messages,
        })
    }

    async fn messages_since(
        &self,
        viewer: &UserId,
        since: i64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let ids: Vec<i64> = self
            .conn()
            .zrangebyscore_limit(
                self.keys.inbox(viewer.as_str()),
                format!("({since}"),
                "+inf",
                0,
                limit as isize + 1,
            )
            .await?;
        let (ids, has_more) = cut_to_page(ids, limit);
        Ok(Page {
            messages: self.read_messages(&ids).await?,
            has_more,
        })
    }

    async fn history(
        &self,
        viewer: &UserId,
        peer: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let newest_first: Vec<i64> = self
            .conn()
            .zrevrangebyscore_limit(
                self.keys.conversation(viewer.as_str(), peer.as_str()),
                max,
                "-inf",
                0,
                limit as isize + 1,
            )
            .await?;
        let (mut ids, has_more) = cut_to_page(newest_first, limit);
        ids.reverse();
        Ok(Page {
            messages: self.read_messages(&ids).await?,
            has_more,
        })
    }

    async fn socket_connected(&self, user: &UserId) -> Result<u32, StoreError> {
        let total: i64 = self
            .scripts
            .socket_connected
            .key(self.keys.nodes())
            .arg(&self.node)
            .arg(user.as_str())
            .arg(self.keys.presence_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        self.local.connect(user);
        Ok(total.max(0) as u32)
    }

    async fn socket_disconnected(&self, user: &UserId) -> Result<Option<u32>, StoreError> {
        let total: i64 = self
            .scripts
            .socket_disconnected
            .key(self.keys.nodes())
            .arg(&self.node)
            .arg(user.as_str())
            .arg(self.keys.presence_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        self.local.disconnect(user);
        Ok((total >= 0).then_some(total as u32))
    }

    async fn online_users(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
        let users: Vec<String> = self
            .scripts
            .online_users
            .key(self.keys.nodes())
            .arg(self.keys.presence_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Arc::new(
            users.into_iter().map(UserId::from_store).collect(),
        ))
    }

    async fn socket_count(&self, user: &UserId) -> Result<u32, StoreError> {
        let total: i64 = self
            .scripts
            .socket_count
            .key(self.keys.nodes())
            .arg(user.as_str())
            .arg(self.keys.presence_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(total.max(0) as u32)
    }

    fn heartbeat_every(&self) -> Option<Duration> {
        Some(self.options.heartbeat_every())
    }

    async fn heartbeat(&self) -> Result<Vec<PresenceChange>, StoreError> {
        let reply: Vec<redis::Value> = self
            .scripts
            .heartbeat
            .key(self.keys.nodes())
            .arg(&self.node)
            .arg(self.options.heartbeat_ttl.as_millis() as u64)
            .arg(self.keys.presence_prefix())
            .arg(self.keys.heartbeat_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        let mut values = reply.into_iter();
        let rejoined: i64 = values
            .next()
            .map(redis::from_redis_value)
            .transpose()?
            .unwrap_or(0);
        let mut changes = Vec::new();
        while let (Some(user), Some(left)) = (values.next(), values.next()) {
            let user: String = redis::from_redis_value(user)?;
            let left: i64 = redis::from_redis_value(left)?;
            changes.push(PresenceChange::Left {
                user: UserId::from_store(user),
                sockets_left: left.max(0) as u32,
            });
        }
        let counts = self.local.counts();
        if rejoined == 1 && !counts.is_empty() {
            // Swept while alive (paused or cut off longer than the TTL): put our sockets back.
            tracing::warn!(
                node = %self.node,
                users = counts.len(),
                "this node's presence had expired; republishing it"
            );
            let mut republish = self.scripts.republish.prepare_invoke();
            republish.arg(&self.node).arg(self.keys.presence_prefix());
            for (user, count) in &counts {
                republish.arg(user.as_str()).arg(*count);
            }
            let _: i64 = republish.invoke_async(&mut self.conn()).await?;
            changes.extend(
                counts
                    .into_iter()
                    .map(|(user, _)| PresenceChange::Returned { user }),
            );
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_json_is_the_wire_json_once_the_script_prepends_the_id() {
        let message = Message {
            id: 0,
            ts: 1_700_000_000_123,
            content: "hé \"quoted\" }".to_owned(),
            from: "a".to_owned(),
            to: "b".to_owned(),
            client_id: Some("c-1".to_owned()),
        };
        let stored = format!("{{\"id\":42,{}", json_after_id(&message));
        let back: Message = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, Message { id: 42, ..message });
    }

    #[test]
    fn conversation_keys_do_not_depend_on_who_sends() {
        let keys = Keys {
            prefix: "t".to_owned(),
        };
        assert_eq!(keys.conversation("a", "b"), keys.conversation("b", "a"));
        assert_ne!(keys.conversation("a", "b"), keys.conversation("a", "c"));
    }
}
