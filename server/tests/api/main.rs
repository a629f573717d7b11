//! Integration tests: the real server, a real SQLite file, and a Socket.IO client nobody here
//! wrote. One binary with modules keeps link time down.

mod helpers;

mod abuse;
mod backup;
mod client_conformance;
mod cluster;
mod contract;
mod cors;
mod delivery;
mod devices;
mod durability;
mod failover;
mod handshake;
mod http;
mod messaging;
mod messenger;
mod ops;
mod passkeys;
mod presence;
mod proof;
mod pubsub_cluster;
mod redis_presence;
mod redis_store;
mod redis_tls;
mod rotation;
mod security;
mod session;
mod store_contract;
mod tabs;
