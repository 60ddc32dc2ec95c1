//! What a virtio-blk device must answer to a request (virtio 1.2 5.2.6, and docs/blk.md for
//! this device's choices), from the chain's buffers alone: the status, and which image bytes
//! the request reads or may change. Written from the specification, not from the device.
//!
//! * no device-writable byte: no status can be written, the device gives up on the driver
//!   (DEVICE_NEEDS_RESET);
//! * header shorter than 16 bytes: IOERR;
//! * IN: no readable data, a multiple of 512 writable bytes inside the image; OUT the other
//!   way round; otherwise IOERR;
//! * FLUSH: OK; GET_ID: OK with the serial, IOERR without room for it;
//! * DISCARD / WRITE_ZEROES: UNSUPP unless negotiated; IOERR for no or writable data, data not
//!   a multiple of 16 bytes or more than `MAX_RANGE_SEGMENTS` segments; per segment in order:
//!   unknown flags, or UNMAP on a discard, UNSUPP; more than `MAX_RANGE_SECTORS` sectors or a
//!   range outside the image, IOERR;
//! * any other type: UNSUPP.

use epf_devices::blk::config::{MAX_RANGE_SECTORS, MAX_RANGE_SEGMENTS};

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

/// What the negotiation allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub capacity: u64,
    pub discard: bool,
    pub write_zeroes: bool,
}

/// What a request does to the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Reads `len` bytes at `offset` into the writable data.
    Read {
        offset: u64,
        len: u64,
    },
    /// Writes the readable data after the header at `offset`.
    Write {
        offset: u64,
        len: u64,
    },
    /// Zeroes these byte ranges.
    Zero(Vec<(u64, u64)>),
    /// Discards these byte ranges (their content is then unspecified).
    Discard(Vec<(u64, u64)>),
    /// Copies the first `len` bytes of the serial into the writable data.
    Id {
        len: usize,
    },
}

/// The device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Status byte and effect (the effect only happens with status OK).
    Status(u8, Effect),
    /// No status byte: DEVICE_NEEDS_RESET.
    Fatal,
}

fn range(sector: u64, len: u64, capacity: u64) -> Option<u64> {
    let off = sector.checked_mul(512)?;
    (off.checked_add(len)? <= capacity).then_some(off)
}

/// The answer to a chain whose readable bytes are `readable` and with `writable` writable
/// bytes.
pub fn answer(readable: &[u8], writable: u64, lim: &Limits) -> Answer {
    use Answer::*;
    if writable == 0 {
        return Fatal;
    }
    if readable.len() < 16 {
        return Status(S_IOERR, Effect::None);
    }
    let t = u32::from_le_bytes(readable[0..4].try_into().unwrap());
    let sector = u64::from_le_bytes(readable[8..16].try_into().unwrap());
    let out = &readable[16..];
    let inn = writable - 1;
    let ioerr = Status(S_IOERR, Effect::None);
    match t {
        T_IN => {
            if !out.is_empty() || inn % 512 != 0 {
                return ioerr;
            }
            match range(sector, inn, lim.capacity) {
                Some(offset) => Status(S_OK, Effect::Read { offset, len: inn }),
                None => ioerr,
            }
        }
        T_OUT => {
            if inn != 0 || out.len() % 512 != 0 {
                return ioerr;
            }
            match range(sector, out.len() as u64, lim.capacity) {
                Some(offset) => Status(
                    S_OK,
                    Effect::Write {
                        offset,
                        len: out.len() as u64,
                    },
                ),
                None => ioerr,
            }
        }
        T_FLUSH => Status(S_OK, Effect::None),
        T_GET_ID => {
            if inn == 0 {
                ioerr
            } else {
                Status(
                    S_OK,
                    Effect::Id {
                        len: inn.min(20) as usize,
                    },
                )
            }
        }
        T_DISCARD | T_WRITE_ZEROES => {
            let discard = t == T_DISCARD;
            if (discard && !lim.discard) || (!discard && !lim.write_zeroes) {
                return Status(S_UNSUPP, Effect::None);
            }
            if inn != 0
                || out.is_empty()
                || out.len() % 16 != 0
                || out.len() / 16 > MAX_RANGE_SEGMENTS as usize
            {
                return ioerr;
            }
            let mut ranges = Vec::new();
            for s in out.chunks_exact(16) {
                let start = u64::from_le_bytes(s[0..8].try_into().unwrap());
                let num = u32::from_le_bytes(s[8..12].try_into().unwrap());
                let flags = u32::from_le_bytes(s[12..16].try_into().unwrap());
                if flags & !1 != 0 || (discard && flags & 1 != 0) {
                    return Status(S_UNSUPP, Effect::None);
                }
                if num > MAX_RANGE_SECTORS {
                    return ioerr;
                }
                let len = u64::from(num) * 512;
                let Some(off) = range(start, len, lim.capacity) else {
                    return ioerr;
                };
                if len > 0 {
                    ranges.push((off, len));
                }
            }
            Status(
                S_OK,
                if discard {
                    Effect::Discard(ranges)
                } else {
                    Effect::Zero(ranges)
                },
            )
        }
        _ => Status(S_UNSUPP, Effect::None),
    }
}

impl Effect {
    /// Byte ranges of the image this effect may change.
    pub fn changes(&self) -> Vec<(u64, u64)> {
        match self {
            Effect::Write { offset, len } => vec![(*offset, *len)],
            Effect::Zero(r) | Effect::Discard(r) => r.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: u32, sector: u64, data: &[u8]) -> Vec<u8> {
        let mut v = t.to_le_bytes().to_vec();
        v.extend([0; 4]);
        v.extend(sector.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn answers() {
        let lim = Limits {
            capacity: 4096,
            discard: true,
            write_zeroes: false,
        };
        assert_eq!(answer(&req(T_IN, 0, &[]), 0, &lim), Answer::Fatal);
        assert_eq!(
            answer(&req(T_IN, 7, &[]), 513, &lim),
            Answer::Status(
                S_OK,
                Effect::Read {
                    offset: 3584,
                    len: 512
                }
            )
        );
        assert_eq!(
            answer(&req(T_IN, 8, &[]), 513, &lim),
            Answer::Status(S_IOERR, Effect::None)
        );
        assert_eq!(
            answer(&req(T_IN, 0, &[]), 512, &lim),
            Answer::Status(S_IOERR, Effect::None)
        );
        assert_eq!(
            answer(&req(T_OUT, 0, &[0; 512]), 2, &lim),
            Answer::Status(S_IOERR, Effect::None)
        );
        assert_eq!(
            answer(&req(T_IN, u64::MAX, &[]), 513, &lim),
            Answer::Status(S_IOERR, Effect::None)
        );
        assert_eq!(
            answer(&[0; 15], 1, &lim),
            Answer::Status(S_IOERR, Effect::None)
        );
        assert_eq!(
            answer(&req(99, 0, &[]), 1, &lim),
            Answer::Status(S_UNSUPP, Effect::None)
        );
        assert_eq!(
            answer(&req(T_WRITE_ZEROES, 0, &[0; 16]), 1, &lim),
            Answer::Status(S_UNSUPP, Effect::None)
        );
        let mut seg = 1u64.to_le_bytes().to_vec();
        seg.extend(2u32.to_le_bytes());
        seg.extend(0u32.to_le_bytes());
        assert_eq!(
            answer(&req(T_DISCARD, 0, &seg), 1, &lim),
            Answer::Status(S_OK, Effect::Discard(vec![(512, 1024)]))
        );
        seg[12] = 1;
        assert_eq!(
            answer(&req(T_DISCARD, 0, &seg), 1, &lim),
            Answer::Status(S_UNSUPP, Effect::None)
        );
    }
}
