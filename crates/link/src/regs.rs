//! The register map of the simulated controller, as docs/sim-epc.md specifies it: offsets in
//! BAR 0, field layouts, event bits and error codes. Nothing here has behaviour.

/// `MAGIC`: "VEPC".
pub const MAGIC_VALUE: u32 = 0x4350_4556;
/// Version of the register interface.
pub const VERSION_VALUE: u32 = 1;

pub const MAGIC: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const CAPS: u64 = 0x008;
pub const NUM_WINDOWS: u64 = 0x00c;
pub const WINDOW_ALIGN: u64 = 0x010;
pub const NUM_DMA: u64 = 0x014;
pub const NUM_DOORBELLS: u64 = 0x018;
pub const MAX_MSI: u64 = 0x01c;
pub const MAX_MSIX: u64 = 0x020;
pub const APERTURE_SIZE_LO: u64 = 0x024;
pub const APERTURE_SIZE_HI: u64 = 0x028;
pub const LINK_CTRL: u64 = 0x030;
pub const LINK_STATUS: u64 = 0x034;
pub const EVENT_STATUS: u64 = 0x038;
pub const EVENT_MASK: u64 = 0x03c;
pub const ERROR: u64 = 0x040;
pub const ERROR_COUNT: u64 = 0x044;
pub const APERTURE_BASE_LO: u64 = 0x048;
pub const APERTURE_BASE_HI: u64 = 0x04c;
pub const IRQ_RAISE: u64 = 0x050;
pub const IRQ_RESULT: u64 = 0x054;
pub const MSI_ENABLED: u64 = 0x058;
pub const MSIX_ENABLED: u64 = 0x05c;
pub const DOORBELL_PENDING: u64 = 0x060;

pub const HDR_ID: u64 = 0x100;
pub const HDR_CLASS_REV: u64 = 0x104;
pub const HDR_SUBSYS: u64 = 0x108;
pub const HDR_INTX: u64 = 0x10c;
pub const MSI_VECTORS: u64 = 0x110;
pub const MSIX_VECTORS: u64 = 0x114;
pub const MSIX_TABLE: u64 = 0x118;
pub const MSIX_PBA: u64 = 0x11c;

/// BAR n's registers start at `BAR_BASE + n * BAR_STRIDE`.
pub const BAR_BASE: u64 = 0x200;
pub const BAR_STRIDE: u64 = 0x20;
pub const BAR_PHYS_LO: u64 = 0x00;
pub const BAR_PHYS_HI: u64 = 0x04;
pub const BAR_SIZE_LO: u64 = 0x08;
pub const BAR_SIZE_HI: u64 = 0x0c;
pub const BAR_FLAGS: u64 = 0x10;
pub const BAR_CTRL: u64 = 0x14;

/// Window w's registers start at `WIN_BASE + w * WIN_STRIDE`.
pub const WIN_BASE: u64 = 0x400;
pub const WIN_STRIDE: u64 = 0x20;
pub const WIN_AP_LO: u64 = 0x00;
pub const WIN_AP_HI: u64 = 0x04;
pub const WIN_SIZE_LO: u64 = 0x08;
pub const WIN_SIZE_HI: u64 = 0x0c;
pub const WIN_PCI_LO: u64 = 0x10;
pub const WIN_PCI_HI: u64 = 0x14;
pub const WIN_CTRL: u64 = 0x18;

/// DMA channel c's registers start at `DMA_BASE + c * DMA_STRIDE`.
pub const DMA_BASE: u64 = 0x800;
pub const DMA_STRIDE: u64 = 0x40;
pub const DMA_SRC_LO: u64 = 0x00;
pub const DMA_SRC_HI: u64 = 0x04;
pub const DMA_DST_LO: u64 = 0x08;
pub const DMA_DST_HI: u64 = 0x0c;
pub const DMA_LEN: u64 = 0x10;
pub const DMA_CTRL: u64 = 0x14;
pub const DMA_STATUS: u64 = 0x18;
pub const DMA_DONE_COUNT: u64 = 0x1c;

/// Doorbell d's registers start at `DB_BASE + d * DB_STRIDE`.
pub const DB_BASE: u64 = 0xa00;
pub const DB_STRIDE: u64 = 0x10;
pub const DB_BAR: u64 = 0x00;
pub const DB_OFFSET: u64 = 0x04;
pub const DB_CTRL: u64 = 0x08;
pub const DB_DATA: u64 = 0x0c;

/// `CAPS` bits.
pub const CAP_MSI: u32 = 1 << 0;
pub const CAP_MSIX: u32 = 1 << 1;
pub const CAP_INTX: u32 = 1 << 2;
pub const CAP_DMA: u32 = 1 << 3;
pub const CAP_DOORBELLS: u32 = 1 << 4;

/// `LINK_CTRL` bits.
pub const LINK_START: u32 = 1 << 0;

/// `LINK_STATUS` bits.
pub const STATUS_HOST_ATTACHED: u32 = 1 << 0;
pub const STATUS_LINK_UP: u32 = 1 << 1;
pub const STATUS_BME: u32 = 1 << 2;
pub const STATUS_MSI: u32 = 1 << 3;
pub const STATUS_MSIX: u32 = 1 << 4;

/// `EVENT_STATUS` / `EVENT_MASK` bits.
pub const EV_LINK_UP: u32 = 1 << 0;
pub const EV_LINK_DOWN: u32 = 1 << 1;
pub const EV_BME: u32 = 1 << 2;
pub const EV_HOST_RESET: u32 = 1 << 3;
pub const EV_DOORBELL: u32 = 1 << 4;
/// Bit of DMA channel `c`.
pub const fn ev_dma(c: usize) -> u32 {
    1 << (8 + c)
}
/// Events that interrupt on vector 0.
pub const EV_LINK_MASK: u32 = EV_LINK_UP | EV_LINK_DOWN | EV_BME | EV_HOST_RESET;

/// The controller's own MSI-X vectors (towards the EP VM).
pub const VEC_EVENTS: u16 = 0;
pub const VEC_DMA: u16 = 1;
pub const VEC_DOORBELL: u16 = 2;
pub const EP_VECTORS: u16 = 3;

/// `IRQ_RAISE` types (bits 19:16).
pub const IRQ_INTX_ASSERT: u32 = 1;
pub const IRQ_MSI: u32 = 2;
pub const IRQ_MSIX: u32 = 3;
pub const IRQ_INTX_DEASSERT: u32 = 4;

/// `DMA_CTRL` bits.
pub const DMA_SRC_HOST: u32 = 1 << 0;
pub const DMA_DST_HOST: u32 = 1 << 1;
pub const DMA_START: u32 = 1 << 31;

/// `DMA_STATUS` values (bits 7:0; the error code is in bits 15:8).
pub const DMA_IDLE: u32 = 0;
pub const DMA_DONE: u32 = 2;
pub const DMA_FAILED: u32 = 3;

/// Geometry of the controller.
pub const WINDOWS: usize = 8;
pub const DMA_CHANNELS: usize = 2;
pub const DOORBELLS: usize = 4;
pub const ALIGN: u64 = 4096;
pub const MAX_MSI_VECTORS: u32 = 32;
pub const MAX_MSIX_VECTORS: u32 = 64;
pub const MAX_DMA_LEN: u32 = 64 << 20;
pub const MAX_BAR_SIZE: u64 = 1 << 30;

/// `ERROR` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    BadBar = 1,
    BadWindow = 2,
    BadDma = 3,
    BadIrq = 4,
    BadHeader = 5,
    Busy = 6,
    NotEpRam = 7,
    BadDoorbell = 8,
}
