//! Decoder for trapped accesses to the modern common configuration structure
//! (`struct virtio_pci_common_cfg`, virtio 1.2 section 4.1.4.3): turns (offset, width) into
//! operations on [`Registers`].

use crate::registers::{Effect, Half, Registers, RingAddr};

pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0c;
pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
pub const NUM_QUEUES: u64 = 0x12;
pub const DEVICE_STATUS: u64 = 0x14;
pub const CONFIG_GENERATION: u64 = 0x15;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub const QUEUE_ENABLE: u64 = 0x1c;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;
const END: usize = 0x3c;

/// Serves a read of `data.len()` bytes at `offset`. Reads have no side effects here, so any
/// width is answered from a snapshot of the structure.
pub fn read(regs: &Registers, config_generation: u8, offset: u64, data: &mut [u8]) {
    let mut img = [0u8; END];
    let mut put = |off: u64, bytes: &[u8]| {
        img[off as usize..off as usize + bytes.len()].copy_from_slice(bytes)
    };
    put(
        DEVICE_FEATURE_SELECT,
        &regs.device_feature_select().to_le_bytes(),
    );
    put(DEVICE_FEATURE, &regs.device_feature_word().to_le_bytes());
    put(
        DRIVER_FEATURE_SELECT,
        &regs.driver_feature_select().to_le_bytes(),
    );
    put(DRIVER_FEATURE, &regs.driver_feature_word().to_le_bytes());
    put(CONFIG_MSIX_VECTOR, &regs.config_msix_vector().to_le_bytes());
    put(NUM_QUEUES, &regs.num_queues().to_le_bytes());
    put(DEVICE_STATUS, &[regs.status()]);
    put(CONFIG_GENERATION, &[config_generation]);
    put(QUEUE_SELECT, &regs.queue_select().to_le_bytes());
    put(QUEUE_SIZE, &regs.queue_size().to_le_bytes());
    put(QUEUE_MSIX_VECTOR, &regs.queue_msix_vector().to_le_bytes());
    put(QUEUE_ENABLE, &regs.queue_enable().to_le_bytes());
    put(QUEUE_NOTIFY_OFF, &regs.queue_notify_off().to_le_bytes());
    put(QUEUE_DESC, &regs.queue_addr(RingAddr::Desc).to_le_bytes());
    put(
        QUEUE_DRIVER,
        &regs.queue_addr(RingAddr::Driver).to_le_bytes(),
    );
    put(
        QUEUE_DEVICE,
        &regs.queue_addr(RingAddr::Device).to_le_bytes(),
    );
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| img.get(o).copied())
            .unwrap_or(0);
    }
}

fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
    u64::from_le_bytes(b)
}

/// Applies a write of `data` at `offset`. Only accesses of each field's natural width (and
/// 32-bit halves of the 64-bit ring addresses, as Linux writes them) have an effect; the
/// spec requires drivers to use them. Returns `None` for an access that was ignored.
pub fn write(regs: &mut Registers, offset: u64, data: &[u8]) -> Option<Effect> {
    let v = le(data);
    let ring = |base: u64| -> Option<(RingAddr, Half)> {
        let which = match base {
            QUEUE_DESC => RingAddr::Desc,
            QUEUE_DRIVER => RingAddr::Driver,
            QUEUE_DEVICE => RingAddr::Device,
            _ => return None,
        };
        match (offset - base, data.len()) {
            (0, 8) => Some((which, Half::Full)),
            (0, 4) => Some((which, Half::Low)),
            (4, 4) => Some((which, Half::High)),
            _ => None,
        }
    };
    match (offset, data.len()) {
        (DEVICE_FEATURE_SELECT, 4) => regs.set_device_feature_select(v as u32),
        (DRIVER_FEATURE_SELECT, 4) => regs.set_driver_feature_select(v as u32),
        (DRIVER_FEATURE, 4) => regs.set_driver_feature_word(v as u32),
        (CONFIG_MSIX_VECTOR, 2) => regs.set_config_msix_vector(v as u16),
        (DEVICE_STATUS, 1) => return Some(regs.set_status(v as u8)),
        (QUEUE_SELECT, 2) => regs.set_queue_select(v as u16),
        (QUEUE_SIZE, 2) => regs.set_queue_size(v as u16),
        (QUEUE_MSIX_VECTOR, 2) => regs.set_queue_msix_vector(v as u16),
        (QUEUE_ENABLE, 2) => regs.set_queue_enable(v as u16),
        (o, _) if (QUEUE_DESC..QUEUE_DEVICE + 8).contains(&o) => {
            let base = QUEUE_DESC + (o - QUEUE_DESC) / 8 * 8;
            let (which, half) = ring(base)?;
            regs.set_queue_addr(which, half, v);
        }
        _ => return None,
    }
    Some(Effect::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_any_width_and_odd_writes_are_ignored() {
        let mut r = Registers::new(1 << 32 | 7, &[16, 32], 3);
        let mut b = [0u8; 4];
        read(&r, 5, DEVICE_FEATURE, &mut b);
        assert_eq!(u32::from_le_bytes(b), 7);
        let mut b = [0u8; 2];
        read(&r, 5, DEVICE_STATUS, &mut b);
        assert_eq!(b, [0, 5]);
        read(&r, 5, NUM_QUEUES, &mut b);
        assert_eq!(u16::from_le_bytes(b), 2);
        read(&r, 5, 0x1000, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(write(&mut r, QUEUE_SELECT, &[1, 0, 0, 0]), None);
        assert_eq!(write(&mut r, QUEUE_SELECT, &[1, 0]), Some(Effect::None));
        assert_eq!(
            write(&mut r, QUEUE_DESC + 4, &[1, 0, 0, 0]),
            Some(Effect::None)
        );
        assert_eq!(write(&mut r, QUEUE_DESC + 2, &[1, 0]), None);
        let mut b = [0u8; 8];
        read(&r, 0, QUEUE_DESC, &mut b);
        assert_eq!(u64::from_le_bytes(b), 1 << 32);
        read(&r, 0, QUEUE_SIZE, &mut b[..2]);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 32);
    }
}
