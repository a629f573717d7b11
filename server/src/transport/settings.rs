//! `settings`: read (`{}`) or change the viewer's settings; every setting is answered, and a
//! change is told to every socket of the viewer (every tab, device and node) as `settings`.

use protocol::events;
use protocol::payloads::Settings;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::messages::priced;
use super::overflow::{emit_to_user, Ack};
use super::{handle, object_or_default, price, EventError, SocketState, Viewer};
use crate::store::{SettingsChange, UserSettings};

/// What one `settings` answer costs besides the request: `{"readReceipts":false}`.
const SETTINGS_BYTES: usize = 32;

/// The edge of `settings`: none, `null` or `{}` reads; an object with settings of the right
/// types changes those; anything else is `invalid_payload`.
pub fn parse_settings(payload: Option<Value>) -> Result<SettingsChange, EventError> {
    let request: Settings = object_or_default(payload)?;
    Ok(SettingsChange {
        read_receipts: request.read_receipts,
    })
}

fn wire(settings: UserSettings) -> Settings {
    Settings {
        read_receipts: Some(settings.read_receipts),
    }
}

pub async fn settings<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::SETTINGS, async |viewer| {
        let change = parse_settings(payload.ok())?;
        if change == SettingsChange::default() {
            // A read, priced as one.
            priced(
                &socket,
                &state,
                viewer,
                price::REQUEST_BASE + SETTINGS_BYTES,
                |_| SETTINGS_BYTES,
                async { Ok(wire(state.store.settings(&viewer.user_id).await?)) },
            )
            .await
        } else {
            change_settings(&socket, &state, viewer, change).await
        }
    })
    .await;
}

async fn change_settings<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    change: SettingsChange,
) -> Result<Settings, EventError> {
    // A change may be a write: it takes a token of the bucket `read` uses.
    if !state.marks.try_take(&viewer.user_id) {
        return Err(EventError::RateLimited);
    }
    let changed = state
        .store
        .change_settings(&viewer.user_id, change)
        .await?
        // The viewer's own account is gone (expired under a live socket): nobody to set.
        .ok_or(EventError::UnknownRecipient)?;
    let answer = wire(changed.settings);
    if changed.changed {
        emit_to_user(socket, &viewer.user_id, events::SETTINGS, &answer).await;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_read_by_an_empty_request_and_changed_by_a_typed_one() {
        for read in [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({ "x": 1 })),
        ] {
            assert_eq!(parse_settings(read).unwrap(), SettingsChange::default());
        }
        assert_eq!(
            parse_settings(Some(json!({ "readReceipts": false }))).unwrap(),
            SettingsChange {
                read_receipts: Some(false)
            }
        );
        for bad in [
            json!({ "readReceipts": "no" }),
            json!({ "readReceipts": 0 }),
            json!([true]),
            json!("x"),
        ] {
            let error = parse_settings(Some(bad.clone())).expect_err("refused");
            assert_eq!(error.code(), protocol::ErrorCode::InvalidPayload, "{bad}");
        }
    }
}
