//! The capabilities of VFIO_USER_VERSION: what the client proposes (a NUL-terminated UTF-8
//! JSON object, vfio-user.rst "Version"), and what we answer, a subset of it.
//!
//! The text comes from an untrusted peer; `serde_json` parses it with its recursion limit
//! (128 levels) inside a message that is at most [`MAX_MESSAGE_SIZE`] bytes long, and only
//! the fields we use are kept. Fields we do not know are ignored; known ones of the wrong type
//! refuse the VERSION.
//!
//! [`MAX_MESSAGE_SIZE`]: crate::protocol::MAX_MESSAGE_SIZE

use crate::protocol::{DMA_PGSIZES, MAX_DATA_XFER, MAX_DMA_MAPS, MAX_MSG_FDS};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use thiserror::Error;

/// What the client told us in VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientCaps {
    /// Descriptors the client accepts in one message from us.
    pub max_msg_fds: u64,
    /// Whether the client proposed REGION_WRITE_MULTI.
    pub write_multiple: bool,
}

impl Default for ClientCaps {
    fn default() -> Self {
        // vfio-user.rst "Version": max_msg_fds defaults to 1.
        ClientCaps {
            max_msg_fds: 1,
            write_multiple: false,
        }
    }
}

/// Why a capabilities text was refused.
#[derive(Debug, Error)]
pub(crate) enum CapsError {
    #[error("capabilities are not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("capabilities: {0}")]
    Json(#[from] serde_json::Error),
}

/// The top-level object.
#[derive(Deserialize)]
struct Proposal {
    capabilities: Option<Proposed>,
}

/// The `capabilities` member: the fields vfio-user.rst defines. The ones we do not use are
/// still checked for their type.
#[derive(Deserialize)]
struct Proposed {
    max_msg_fds: Option<u64>,
    #[allow(dead_code)]
    max_data_xfer_size: Option<u64>,
    #[allow(dead_code)]
    pgsizes: Option<u64>,
    #[allow(dead_code)]
    max_dma_maps: Option<u64>,
    write_multiple: Option<bool>,
    #[allow(dead_code)]
    migration: Option<BTreeMap<String, IgnoredAny>>,
}

/// Parses the NUL-terminated JSON of a VERSION message (empty or blank: the defaults).
pub(crate) fn parse_caps(raw: &[u8]) -> Result<ClientCaps, CapsError> {
    let text = match raw.iter().position(|&b| b == 0) {
        Some(n) => &raw[..n],
        None => raw,
    };
    let mut caps = ClientCaps::default();
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(caps);
    }
    let text = std::str::from_utf8(text).map_err(CapsError::NotUtf8)?;
    let proposal: Proposal = serde_json::from_str(text)?;
    if let Some(c) = proposal.capabilities {
        if let Some(n) = c.max_msg_fds {
            caps.max_msg_fds = n;
        }
        caps.write_multiple = c.write_multiple.unwrap_or(false);
    }
    Ok(caps)
}

/// Our capabilities, as a subset of the client's proposal.
pub(crate) fn our_caps(client: &ClientCaps) -> String {
    let mut c = serde_json::json!({
        "max_msg_fds": MAX_MSG_FDS,
        "max_data_xfer_size": MAX_DATA_XFER,
        "pgsizes": DMA_PGSIZES,
        "max_dma_maps": MAX_DMA_MAPS,
    });
    if client.write_multiple {
        c["write_multiple"] = true.into();
    }
    serde_json::json!({ "capabilities": c }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What QEMU 10.x proposes (hw/vfio-user/proxy.c caps_json()).
    const QEMU: &[u8] = br#"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#;

    #[test]
    fn capabilities_are_parsed_and_answered_as_a_subset() {
        let caps = parse_caps(
            br#"{"capabilities":{"max_msg_fds":8,"write_multiple":true,"migration":{"pgsize":4096}}}"#,
        )
        .unwrap();
        assert_eq!(caps.max_msg_fds, 8);
        assert!(caps.write_multiple);
        let ours = our_caps(&caps);
        assert!(ours.contains("\"write_multiple\":true"), "{ours}");
        assert!(
            ours.contains(&format!("\"max_msg_fds\":{MAX_MSG_FDS}")),
            "{ours}"
        );
        assert!(!our_caps(&ClientCaps::default()).contains("write_multiple"));
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert!(v["capabilities"].is_object());
        // Our answer reads back as a proposal of the same capabilities.
        let back = parse_caps(ours.as_bytes()).unwrap();
        assert_eq!(back.max_msg_fds, MAX_MSG_FDS as u64);
        assert!(back.write_multiple);
    }

    #[test]
    fn qemu_proposal_and_defaults() {
        let caps = parse_caps(QEMU).unwrap();
        assert_eq!(
            caps,
            ClientCaps {
                max_msg_fds: 16,
                write_multiple: true
            }
        );
        for blank in [
            &b"\0"[..],
            b"",
            b"  \n\0garbage",
            b"{}",
            br#"{"other":[1,{"a":null}]}"#,
        ] {
            assert_eq!(
                parse_caps(blank).unwrap(),
                ClientCaps::default(),
                "{blank:?}"
            );
        }
    }

    #[test]
    fn malformed_or_mistyped_capabilities_are_refused() {
        for bad in [
            &br#"{"capabilities":{"max_msg_fds":-1}}"#[..],
            br#"{"capabilities":{"max_msg_fds":1e3}}"#,
            br#"{"capabilities":{"max_msg_fds":18446744073709551616}}"#,
            br#"{"capabilities":{"max_msg_fds":"16"}}"#,
            br#"{"capabilities":{"pgsizes":true}}"#,
            br#"{"capabilities":{"write_multiple":1}}"#,
            br#"{"capabilities":{"migration":[]}}"#,
            br#"{"capabilities":[]}"#,
            b"[]",
            b"\"capabilities\"",
            b"{\"a\":1,}",
            b"{\xff}",
            b"not json",
            &QEMU[..QEMU.len() - 1],
        ] {
            assert!(parse_caps(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Nesting deeper than the parser's limit is an error, not a stack overflow.
        let mut deep = b"{\"capabilities\":{\"x\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(parse_caps(&deep).is_err());
    }
}
