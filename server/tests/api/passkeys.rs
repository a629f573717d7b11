//! Passkeys (issue #25, slice 4), the part that has landed: a name a passkey protects cannot be
//! taken by a new sign-up (`name protected`), whatever its case or surrounding spaces, while
//! the protected account's own sessions, and other names, work as before.
//!
//! No passkey can be registered over the wire yet (the ceremonies are the follow-up), so the
//! test protects the name in the store, as `passkey_add` will: a second SQLite instance on the
//! server's file, for this write only (as `devices` does).

use std::time::Duration;

use serde_json::json;
use server::domain::UserId;
use server::store::sqlite::{SessionPolicy, SqliteStore};
use server::store::{Protect, Store, StoredPasskey};

use crate::helpers::spawn_app_in;

#[tokio::test]
async fn a_protected_name_cannot_be_taken_by_a_new_sign_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_in(dir.path()).await;
    let ada = app.connect_as("Ada").await;
    let ada_session = ada.session_id.clone();
    // Before it is protected, the name can be signed up again (a "ghost" of the same name).
    let ghost = app.connect_as("ada").await;
    ghost.close().await;

    let store = SqliteStore::open(
        dir.path(),
        SessionPolicy {
            idle: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
        },
    )
    .expect("the store opens");
    let passkey = StoredPasskey {
        cred_id: "Y3JlZGVudGlhbA".into(),
        json: "{}".into(),
    };
    let user = UserId::parse(&ada.user_id).expect("a user id");
    assert_eq!(
        store.protect(&user, passkey).await.unwrap(),
        Protect::Protected
    );
    drop(store);

    for taken in ["ada", "Ada", " ADA "] {
        let refusal = app.refusal(json!({ "username": taken })).await;
        assert!(
            refusal.ends_with(r#"{"message":"name protected"}"#),
            "{taken:?}: {refusal}"
        );
    }
    // The account's own session resumes, and other names sign up as before.
    let again = app.resume(&ada_session).await;
    assert_eq!(again.user_id, ada.user_id);
    app.connect_as("adam").await;
}
