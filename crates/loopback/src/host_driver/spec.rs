//! Constants and layouts of the virtio-over-PCI transport and the split virtqueue, taken
//! from the virtio 1.2 specification (sections 2.7 "Split Virtqueues", 4.1 "Virtio Over PCI
//! Bus", 6 "Reserved Feature Bits"). Deliberately independent of any device-side code so a
//! misreading of the spec on one side is not silently shared by the other.

// ---- PCI -------------------------------------------------------------------------------------

/// Vendor ID of all virtio PCI devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Lowest PCI device ID owned by virtio (transitional devices: 0x1000..=0x103f).
pub const VIRTIO_PCI_DEVICE_ID_MIN: u16 = 0x1000;
/// First modern device ID (0x1040 + virtio device type).
pub const VIRTIO_PCI_MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// Highest PCI device ID owned by virtio.
pub const VIRTIO_PCI_DEVICE_ID_MAX: u16 = 0x107f;

pub const PCI_VENDOR_ID: usize = 0x00;
pub const PCI_DEVICE_ID: usize = 0x02;
pub const PCI_COMMAND: usize = 0x04;
pub const PCI_STATUS: usize = 0x06;
pub const PCI_REVISION_ID: usize = 0x08;
pub const PCI_SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const PCI_SUBSYSTEM_ID: usize = 0x2e;
pub const PCI_CAPABILITY_LIST: usize = 0x34;
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
pub const PCI_COMMAND_MASTER: u16 = 0x4;
pub const PCI_STATUS_CAP_LIST: u16 = 0x10;
/// Vendor-specific capability ID.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// Linux's bound on capability-list walks (`PCI_FIND_CAP_TTL`), against loops.
pub const PCI_FIND_CAP_TTL: usize = 48;
/// Number of standard BARs.
pub const PCI_STD_NUM_BARS: u8 = 6;

// ---- Virtio PCI capabilities (struct virtio_pci_cap) -----------------------------------------

pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// Offsets inside `struct virtio_pci_cap`.
pub const CAP_VNDR: usize = 0;
pub const CAP_NEXT: usize = 1;
pub const CAP_LEN: usize = 2;
pub const CAP_CFG_TYPE: usize = 3;
pub const CAP_BAR: usize = 4;
pub const CAP_ID: usize = 5;
pub const CAP_OFFSET: usize = 8;
pub const CAP_LENGTH: usize = 12;
/// `sizeof(struct virtio_pci_cap)`.
pub const VIRTIO_PCI_CAP_SIZE: usize = 16;
/// `struct virtio_pci_notify_cap`: `notify_off_multiplier` follows the generic part.
pub const NOTIFY_CAP_MULTIPLIER: usize = 16;
pub const VIRTIO_PCI_NOTIFY_CAP_SIZE: usize = 20;
/// `struct virtio_pci_cfg_cap`: `pci_cfg_data[4]` follows the generic part.
pub const PCI_CFG_CAP_DATA: usize = 16;
pub const VIRTIO_PCI_CFG_CAP_SIZE: usize = 20;

// ---- Common configuration structure (struct virtio_pci_common_cfg) ----------------------------

pub const COMMON_DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const COMMON_DEVICE_FEATURE: u64 = 0x04;
pub const COMMON_DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const COMMON_DRIVER_FEATURE: u64 = 0x0c;
pub const COMMON_CONFIG_MSIX_VECTOR: u64 = 0x10;
pub const COMMON_NUM_QUEUES: u64 = 0x12;
pub const COMMON_DEVICE_STATUS: u64 = 0x14;
pub const COMMON_CONFIG_GENERATION: u64 = 0x15;
pub const COMMON_QUEUE_SELECT: u64 = 0x16;
pub const COMMON_QUEUE_SIZE: u64 = 0x18;
pub const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub const COMMON_QUEUE_ENABLE: u64 = 0x1c;
pub const COMMON_QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const COMMON_QUEUE_DESC: u64 = 0x20;
pub const COMMON_QUEUE_DRIVER: u64 = 0x28;
pub const COMMON_QUEUE_DEVICE: u64 = 0x30;
/// `sizeof(struct virtio_pci_common_cfg)`: the minimum length of the common capability.
pub const COMMON_CFG_SIZE: u32 = 0x38;

/// "No MSI-X vector" for `config_msix_vector` / `queue_msix_vector`.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

// ---- Device status ----------------------------------------------------------------------------

pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

// ---- Feature bits -----------------------------------------------------------------------------

pub const VIRTIO_F_INDIRECT_DESC: u32 = 28;
pub const VIRTIO_F_EVENT_IDX: u32 = 29;
pub const VIRTIO_F_VERSION_1: u32 = 32;
pub const VIRTIO_F_ACCESS_PLATFORM: u32 = 33;
pub const VIRTIO_F_RING_PACKED: u32 = 34;
pub const VIRTIO_F_IN_ORDER: u32 = 35;
pub const VIRTIO_F_NOTIFICATION_DATA: u32 = 38;

/// The mask of feature bit `bit`.
pub const fn feature(bit: u32) -> u64 {
    1u64 << bit
}

// ---- ISR status -------------------------------------------------------------------------------

pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

// ---- Split virtqueue --------------------------------------------------------------------------

/// `struct virtq_desc`: addr u64, len u32, flags u16, next u16.
pub const DESC_SIZE: u64 = 16;
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// `struct virtq_avail`: flags u16, idx u16, ring\[size\] u16, used_event u16.
pub const AVAIL_FLAGS: u64 = 0;
pub const AVAIL_IDX: u64 = 2;
pub const AVAIL_RING: u64 = 4;
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `struct virtq_used`: flags u16, idx u16, ring\[size\] {id u32, len u32}, avail_event u16.
pub const USED_FLAGS: u64 = 0;
pub const USED_IDX: u64 = 2;
pub const USED_RING: u64 = 4;
pub const USED_ELEM_SIZE: u64 = 8;
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Maximum split queue size.
pub const VIRTQ_MAX_SIZE: u16 = 32768;
/// Ring alignment Linux uses for modern devices (`SMP_CACHE_BYTES`), placing the used ring.
pub const VRING_USED_ALIGN: u64 = 64;

/// Bytes of the descriptor table for `size` entries.
pub const fn desc_table_size(size: u16) -> u64 {
    DESC_SIZE * size as u64
}

/// Bytes of the available ring (with `used_event`) for `size` entries.
pub const fn avail_ring_size(size: u16) -> u64 {
    2 * (3 + size as u64)
}

/// Bytes of the used ring (with `avail_event`) for `size` entries.
pub const fn used_ring_size(size: u16) -> u64 {
    2 * 3 + USED_ELEM_SIZE * size as u64
}

// ---- Packed virtqueue (spec 2.8) ---------------------------------------------------------------

/// `struct pvirtq_desc`: addr u64, len u32, id u16, flags u16.
pub const PACKED_DESC_LEN: u64 = 8;
pub const PACKED_DESC_ID: u64 = 12;
pub const PACKED_DESC_FLAGS: u64 = 14;
/// Driver's available bit / used bit of a packed descriptor's flags.
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;
/// `struct pvirtq_event_suppress`: off_wrap u16 (offset, wrap counter in bit 15), flags u16.
pub const EVENT_OFF_WRAP: u64 = 0;
pub const EVENT_FLAGS: u64 = 2;
pub const EVENT_SUPPRESS_SIZE: u64 = 4;
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
pub const RING_EVENT_FLAGS_DESC: u16 = 2;

/// Whether an event index of `event_idx` asks for a notification when the index moves from
/// `old` to `new` (spec 2.7.10, `vring_need_event`).
pub const fn vring_need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_the_spec_formula() {
        // Moving from 0 to 1 crosses event 0.
        assert!(vring_need_event(0, 1, 0));
        // Event 5 is not crossed by 0 -> 3.
        assert!(!vring_need_event(5, 3, 0));
        // 3 -> 6 crosses 5.
        assert!(vring_need_event(5, 6, 3));
        // Wrap-around: 0xfffe -> 2 crosses 0xffff.
        assert!(vring_need_event(0xffff, 2, 0xfffe));
        assert!(!vring_need_event(3, 2, 0xfffe));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(desc_table_size(256), 4096);
        assert_eq!(avail_ring_size(256), 6 + 512);
        assert_eq!(used_ring_size(256), 6 + 2048);
    }
}
