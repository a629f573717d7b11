//! `devices` and `revoke_device` (issue #25): every session of the viewer's account, shown as
//! a device (its browser, first and last seen, `current` for the asking one), and ending any
//! one of them. A revoked session's sockets close on every node at once, through the same
//! broadcast a logout uses ([`super::logout::close_sockets`]); revoking the current device is
//! signing this browser out.
//!
//! Devices are named on the wire by a public id derived from the session's family
//! ([`crate::identity::device::device_id`]), never its secret or digest. Both events are reads
//! of the viewer's session list, priced by the rows read and the bytes answered, like every
//! other read; a revoke is also a write, and takes a token of the bucket `read` and `settings`
//! changes use (`--read-marks-per-sec`).

use protocol::events;
use protocol::payloads::{DeviceEntry, DeviceList, RevokeDeviceRequest};
use serde::de::IgnoredAny;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::SocketIo;

use super::logout::{close_sockets, Ended};
use super::messages::priced;
use super::overflow::Ack;
use super::{handle, object, object_or_default, price, EventError, SocketState, Viewer};
use crate::domain::UserId;
use crate::identity::device::{device_id, is_device_id};
use crate::store::{Device, DEVICE_LABEL_MAX};

/// A device entry's JSON without its browser label: `{"deviceID":"<16>","browser":"",
/// "firstSeen":…,"lastSeen":…,"current":false}` with 19-digit numbers, and a separating comma.
const DEVICE_FIXED: usize = 128;

/// How many devices a `devices` request reserves for before it reads (a user has a handful;
/// more are paid for after the answer, out of the next reads).
const DEVICES_RESERVED: usize = 32;

/// What listing one device costs: its row, and its entry at its largest.
const DEVICE_MOST: usize = price::STORE_ROW + DEVICE_FIXED + 4 * DEVICE_LABEL_MAX;

/// The edge of `devices`: none, `null` or an object (its keys are ignored); anything else is
/// `invalid_payload`.
pub fn parse_devices(payload: Option<Value>) -> Result<(), EventError> {
    object_or_default::<IgnoredAny>(payload).map(|_| ())
}

/// The edge of `revoke_device`: an object whose `deviceID` has the form of a device id, else
/// `invalid_payload` (nothing is read).
pub fn parse_revoke(payload: Option<Value>) -> Result<String, EventError> {
    let request: RevokeDeviceRequest = object(payload)?;
    if !is_device_id(&request.device_id) {
        return Err(EventError::InvalidPayload);
    }
    Ok(request.device_id)
}

fn entry(device: &Device, viewer: &Viewer) -> DeviceEntry {
    DeviceEntry {
        device_id: device_id(&device.family),
        browser: device.label.clone(),
        first_seen: device.created,
        last_seen: device.last_seen,
        current: device.family == viewer.family,
    }
}

/// What an answer listing these devices cost: each one's row and entry.
fn list_cost(list: &DeviceList) -> usize {
    list.devices
        .iter()
        .map(|d| price::STORE_ROW + DEVICE_FIXED + price::json_str_bytes(&d.browser))
        .sum()
}

fn reserve_most(state: &SocketState) -> usize {
    (price::REQUEST_BASE + DEVICES_RESERVED * DEVICE_MOST).min(state.limits.largest_read())
}

pub async fn devices<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::DEVICES, async |viewer| {
        parse_devices(payload.ok())?;
        priced(
            &socket,
            &state,
            viewer,
            reserve_most(&state),
            list_cost,
            async {
                let devices = state.store.devices(&viewer.user_id).await?;
                Ok(DeviceList {
                    devices: devices.iter().map(|d| entry(d, viewer)).collect(),
                })
            },
        )
        .await
    })
    .await;
}

pub async fn revoke_device<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    // The ended session's family and whether it was the asking one, set by a revoke that
    // succeeded; its sockets close after the answer (the asking one too, when it revoked itself).
    let mut ended: Option<(String, bool, UserId)> = None;
    handle(
        &socket,
        &state,
        ack,
        events::REVOKE_DEVICE,
        async |viewer| {
            let family = revoke(&socket, &state, viewer, payload.ok()).await?;
            let current = family == viewer.family;
            ended = Some((family, current, viewer.user_id.clone()));
            Ok(true)
        },
    )
    .await;
    let Some((family, current, user_id)) = ended else {
        return;
    };
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %user_id, current, "device revoked");
    close_sockets(&io, Ended::Sessions(vec![family])).await;
}

/// Ends the viewer's session named `deviceID`; returns its family (whose sockets must close).
async fn revoke<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<String, EventError> {
    let wanted = parse_revoke(payload)?;
    // A write: one token of the per-user bucket of `read` and `settings` changes.
    if !state.marks.try_take(&viewer.user_id) {
        return Err(EventError::RateLimited);
    }
    // Found among the viewer's own sessions only: another account's device is unknown.
    let family = priced(
        socket,
        state,
        viewer,
        reserve_most(state),
        |rows: &(Option<String>, usize)| rows.1 * price::STORE_ROW,
        async {
            let devices = state.store.devices(&viewer.user_id).await?;
            let family = devices
                .iter()
                .find(|d| device_id(&d.family) == wanted)
                .map(|d| d.family.clone());
            Ok((family, devices.len()))
        },
    )
    .await?
    .0
    .ok_or(EventError::UnknownDevice)?;
    // Ended meanwhile (expired, signed out, revoked by another tab): unknown now.
    if !state.store.end_family(&viewer.user_id, &family).await? {
        return Err(EventError::UnknownDevice);
    }
    Ok(family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_takes_nothing_or_an_object() {
        for ok in [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({ "x": 1 })),
        ] {
            assert!(parse_devices(ok).is_ok());
        }
        for bad in [json!(1), json!("x"), json!([]), json!(true)] {
            let error = parse_devices(Some(bad.clone())).expect_err("refused");
            assert_eq!(error.code(), protocol::ErrorCode::InvalidPayload, "{bad}");
        }
    }

    #[test]
    fn a_revoke_names_one_device_id_of_the_right_form() {
        let id = device_id(&"f".repeat(64));
        assert_eq!(parse_revoke(Some(json!({ "deviceID": id }))).unwrap(), id);
        for bad in [
            json!(null),
            json!(id),
            json!({}),
            json!({ "deviceID": 5 }),
            json!({ "deviceID": null }),
            json!({ "deviceID": "" }),
            json!({ "deviceID": "x".repeat(10_000) }),
            json!({ "deviceID": "0123456789ABCDEF" }),
            json!({ "deviceID": "f".repeat(64) }),
            json!([{ "deviceID": id }]),
        ] {
            let error = parse_revoke(Some(bad.clone())).expect_err("refused");
            assert_eq!(error.code(), protocol::ErrorCode::InvalidPayload, "{bad}");
        }
        assert!(parse_revoke(None).is_err());
    }

    #[test]
    fn the_current_device_is_the_viewers_family_and_its_id_is_not_the_family() {
        let viewer = Viewer::new(
            crate::domain::SessionId::random(),
            crate::domain::UserId::random(),
            "ada".into(),
        );
        let mine = Device {
            family: viewer.family.clone(),
            label: "Firefox on Linux".into(),
            created: 1,
            last_seen: 2,
            bound: true,
        };
        let other = Device {
            family: "0".repeat(64),
            ..mine.clone()
        };
        let listed = entry(&mine, &viewer);
        assert!(listed.current);
        assert!(!entry(&other, &viewer).current);
        assert_ne!(listed.device_id, viewer.family);
        assert!(!viewer.family.contains(&listed.device_id));
        assert!(!listed.device_id.contains(viewer.session_id.expose_secret()));
        let wire = serde_json::to_string(&DeviceList {
            devices: vec![listed],
        })
        .unwrap();
        assert!(list_cost(&serde_json::from_str(&wire).unwrap()) >= wire.len() - 14);
    }
}
