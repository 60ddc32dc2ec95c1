//! Decoder for trapped accesses to the legacy register block ([`crate::legacy_layout`]):
//! turns (offset, width) into operations on [`Registers`]. ISR and device configuration are
//! served by the caller, which owns them.

use crate::legacy_layout::*;
use crate::registers::{Effect, Registers};

/// What a read at an offset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyRead {
    /// Served from the registers into the buffer.
    Done,
    /// The ISR byte (read clears it): the caller serves it.
    Isr,
    /// Device configuration at this offset: the caller serves it.
    Config(u64),
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyWrite {
    Effect(Effect),
    /// QUEUE_NOTIFY for this queue.
    Notify(u16),
    /// A write to device configuration (read-only here) or an unknown/odd-width access.
    Ignored,
}

/// Serves a read of `data.len()` bytes at `offset`.
pub fn read(regs: &Registers, msix_enabled: bool, offset: u64, data: &mut [u8]) -> LegacyRead {
    let cfg = config_offset(msix_enabled);
    if offset >= cfg {
        return LegacyRead::Config(offset - cfg);
    }
    if offset == ISR && data.len() == 1 {
        return LegacyRead::Isr;
    }
    let mut img = [0u8; 0x18];
    img[0..4].copy_from_slice(&(regs.device_features() as u32).to_le_bytes());
    img[4..8].copy_from_slice(&(regs.driver_features() as u32).to_le_bytes());
    img[8..12].copy_from_slice(&regs.queue_pfn().to_le_bytes());
    img[12..14].copy_from_slice(&regs.queue_size().to_le_bytes());
    img[14..16].copy_from_slice(&regs.queue_select().to_le_bytes());
    img[18] = regs.status();
    img[20..22].copy_from_slice(&regs.config_msix_vector().to_le_bytes());
    img[22..24].copy_from_slice(&regs.queue_msix_vector().to_le_bytes());
    for (i, b) in data.iter_mut().enumerate() {
        *b = (offset as usize)
            .checked_add(i)
            .filter(|&o| o < cfg as usize && o != ISR as usize)
            .and_then(|o| img.get(o).copied())
            .unwrap_or(0);
    }
    LegacyRead::Done
}

/// Applies a write of `data` at `offset`.
pub fn write(regs: &mut Registers, msix_enabled: bool, offset: u64, data: &[u8]) -> LegacyWrite {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    let v = u32::from_le_bytes(b);
    if offset >= config_offset(msix_enabled) {
        return LegacyWrite::Ignored;
    }
    match (offset, data.len()) {
        (GUEST_FEATURES, 4) => {
            regs.set_driver_feature_select(0);
            regs.set_driver_feature_word(v);
        }
        (QUEUE_PFN, 4) => regs.set_queue_pfn(v),
        (QUEUE_SEL, 2) => regs.set_queue_select(v as u16),
        (QUEUE_NOTIFY, 2) => return LegacyWrite::Notify(v as u16),
        (STATUS, 1) => return LegacyWrite::Effect(regs.set_status(v as u8)),
        (MSI_CONFIG_VECTOR, 2) if msix_enabled => regs.set_config_msix_vector(v as u16),
        (MSI_QUEUE_VECTOR, 2) if msix_enabled => regs.set_queue_msix_vector(v as u16),
        _ => return LegacyWrite::Ignored,
    }
    LegacyWrite::Effect(Effect::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_legacy_queue_setup_sequence() {
        let mut r = Registers::new_legacy(1 << 28, &[128, 128], 3);
        let mut b2 = [0u8; 2];
        let mut b4 = [0u8; 4];
        assert_eq!(read(&r, true, HOST_FEATURES, &mut b4), LegacyRead::Done);
        assert_eq!(u32::from_le_bytes(b4), 1 << 28);
        write(&mut r, true, STATUS, &[1]);
        write(&mut r, true, STATUS, &[3]);
        write(&mut r, true, GUEST_FEATURES, &(1u32 << 28).to_le_bytes());
        write(&mut r, true, MSI_CONFIG_VECTOR, &0u16.to_le_bytes());
        read(&r, true, MSI_CONFIG_VECTOR, &mut b2);
        assert_eq!(u16::from_le_bytes(b2), 0);
        for q in 0..2u16 {
            write(&mut r, true, QUEUE_SEL, &q.to_le_bytes());
            read(&r, true, QUEUE_NUM, &mut b2);
            assert_eq!(u16::from_le_bytes(b2), 128);
            read(&r, true, QUEUE_PFN, &mut b4);
            assert_eq!(u32::from_le_bytes(b4), 0, "queue must not be active yet");
            write(&mut r, true, QUEUE_PFN, &(0x100 + q as u32).to_le_bytes());
            write(&mut r, true, MSI_QUEUE_VECTOR, &(q + 1).to_le_bytes());
            read(&r, true, MSI_QUEUE_VECTOR, &mut b2);
            assert_eq!(u16::from_le_bytes(b2), q + 1);
        }
        write(&mut r, true, QUEUE_SEL, &1u16.to_le_bytes());
        write(&mut r, true, MSI_QUEUE_VECTOR, &9u16.to_le_bytes());
        read(&r, true, MSI_QUEUE_VECTOR, &mut b2);
        assert_eq!(
            u16::from_le_bytes(b2),
            0xffff,
            "a vector we lack is refused"
        );
        assert_eq!(
            write(&mut r, true, QUEUE_NOTIFY, &1u16.to_le_bytes()),
            LegacyWrite::Notify(1)
        );
        let LegacyWrite::Effect(Effect::Activate(a)) = write(&mut r, true, STATUS, &[7]) else {
            panic!("DRIVER_OK must activate")
        };
        assert_eq!(a.queues[1].unwrap().desc_addr, 0x101 << 12);
        assert_eq!(a.queue_vectors, vec![1, 0xffff]);
        assert_eq!(read(&r, true, 0x18, &mut b2), LegacyRead::Config(0));
        assert_eq!(read(&r, false, 0x14, &mut b2), LegacyRead::Config(0));
        assert_eq!(read(&r, false, ISR, &mut [0u8]), LegacyRead::Isr);
    }
}
