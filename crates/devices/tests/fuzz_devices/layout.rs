//! The devices under fuzz, the queues a driver sets up on each (depending on the features it
//! accepted) and what each queue is for, and where the host's rings and scratch memory lie:
//! the loopback driver allocates rings from the bottom of host RAM, queue by queue, then the
//! case's scratch area. The generator needs the addresses before the case runs; the executor
//! checks the driver put everything exactly there.

use epf_loopback::host_driver::spec::{avail_ring_size, desc_table_size, used_ring_size};
use virtio_bindings::virtio_net::{VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ};

/// Host RAM of every rig: at the loopback's default bus address, 16 MiB.
pub const RAM_BASE: u64 = epf_loopback::DEFAULT_RAM_BASE;
pub const RAM_SIZE: u64 = 16 << 20;
/// Scratch memory of a case (buffers, headers, indirect tables).
pub const SCRATCH_LEN: u64 = 2 << 20;
/// Queue pairs of the net device (so MQ and VQ_PAIRS_SET are in play).
pub const NET_PAIRS: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rng,
    Console,
    Blk,
    Net,
}

/// What a queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// virtio-rng requests: the device fills writable buffers.
    RngReq,
    /// virtio-console receiveq: input for the host, as it comes.
    ConsoleRx,
    /// virtio-console transmitq: output from the host.
    ConsoleTx,
    /// virtio-blk requests.
    BlkReq,
    /// virtio-net receiveq: packets, as they come.
    NetRx,
    /// virtio-net transmitq.
    NetTx,
    /// virtio-net controlq.
    NetCtrl,
}

impl Role {
    /// Whether the device must take every chain made available (it does not wait for
    /// input before using them).
    pub fn eager(self) -> bool {
        !matches!(self, Role::ConsoleRx | Role::NetRx)
    }
}

/// One queue as set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub index: u16,
    pub role: Role,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl QueueLayout {
    /// The ring structures: (address, length) of the table, available and used rings.
    pub fn structures(&self) -> [(u64, u64); 3] {
        [
            (self.desc, desc_table_size(self.size)),
            (self.avail, avail_ring_size(self.size)),
            (self.used, used_ring_size(self.size)),
        ]
    }
}

/// Where everything of a case lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub queues: Vec<QueueLayout>,
    pub scratch: u64,
}

impl Layout {
    pub fn queue(&self, index: u16) -> Option<&QueueLayout> {
        self.queues.iter().find(|q| q.index == index)
    }
}

/// The queues a driver with `features` negotiated sets up, in order.
pub fn queues(kind: Kind, features: u64) -> Vec<(u16, Role)> {
    match kind {
        Kind::Rng => vec![(0, Role::RngReq)],
        Kind::Console => vec![(0, Role::ConsoleRx), (1, Role::ConsoleTx)],
        Kind::Blk => vec![(0, Role::BlkReq)],
        Kind::Net => {
            let has = |b: u32| features & (1 << b) != 0;
            let pairs = if has(VIRTIO_NET_F_MQ) { NET_PAIRS } else { 1 };
            let mut v = Vec::new();
            for p in 0..pairs {
                v.push((2 * p, Role::NetRx));
                v.push((2 * p + 1, Role::NetTx));
            }
            if has(VIRTIO_NET_F_CTRL_VQ) {
                v.push((2 * pairs, Role::NetCtrl));
            }
            v
        }
    }
}

fn align(x: u64, a: u64) -> u64 {
    x.next_multiple_of(a)
}

/// The layout the loopback driver produces (`prepare_queue`: one block per queue, 4 KiB
/// aligned, the used ring at the next 64-byte boundary; then the scratch area).
pub fn layout(kind: Kind, features: u64, qsize: u16) -> Layout {
    let mut at = RAM_BASE;
    let mut qs = Vec::new();
    for (index, role) in queues(kind, features) {
        let desc = align(at, 4096);
        let avail = desc + desc_table_size(qsize);
        let used = align(avail + avail_ring_size(qsize), 64);
        at = used + used_ring_size(qsize);
        qs.push(QueueLayout {
            index,
            role,
            size: qsize,
            desc,
            avail,
            used,
        });
    }
    Layout {
        queues: qs,
        scratch: align(at, 4096),
    }
}

/// Whether `features` respect the dependencies the specification puts between them (a
/// driver that accepts a feature without the ones it depends on may be refused later, e.g.
/// by the TAP when the offloads are applied).
pub fn consistent(kind: Kind, features: u64) -> bool {
    use virtio_bindings::virtio_net::*;
    if kind != Kind::Net {
        return true;
    }
    let has = |b: u32| features & (1 << b) != 0;
    let needs = |a: u32, deps: &[u32]| !has(a) || deps.iter().any(|&d| has(d));
    needs(VIRTIO_NET_F_CTRL_RX, &[VIRTIO_NET_F_CTRL_VQ])
        && needs(VIRTIO_NET_F_CTRL_MAC_ADDR, &[VIRTIO_NET_F_CTRL_VQ])
        && needs(VIRTIO_NET_F_MQ, &[VIRTIO_NET_F_CTRL_VQ])
        && needs(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, &[VIRTIO_NET_F_CTRL_VQ])
        && needs(VIRTIO_NET_F_GUEST_TSO4, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(VIRTIO_NET_F_GUEST_TSO6, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(
            VIRTIO_NET_F_GUEST_ECN,
            &[VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6],
        )
        && needs(VIRTIO_NET_F_HOST_TSO4, &[VIRTIO_NET_F_CSUM])
        && needs(VIRTIO_NET_F_HOST_TSO6, &[VIRTIO_NET_F_CSUM])
        && needs(
            VIRTIO_NET_F_HOST_ECN,
            &[VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6],
        )
}
