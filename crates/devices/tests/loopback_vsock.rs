//! virtio-vsock through the real virtio-pci function on the loopback controller, driven only
//! through the loopback host driver: the configuration space, a host-initiated connection
//! carrying data both ways to a Unix-socket service, an RST for a refused port, and a
//! transmit chain too short for a header (DEVICE_NEEDS_RESET, no access outside host RAM).

mod common;

use common::*;
use epf_devices::vsock::header::*;
use epf_devices::vsock::{VsockConfig, VsockDevice};
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::HostBus;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const CID: u64 = 77;
const RX_BUF: u32 = 4096 + HEADER_LEN as u32;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vsock-loop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Host {
    bus: HostBus,
    drv: VirtioPciDriver,
    rx: HostQueue,
    tx: HostQueue,
    _ev: HostQueue,
    /// RX buffer address of each posted head.
    rx_bufs: std::collections::HashMap<u16, u64>,
}

fn up(rig: &Rig) -> Host {
    let drv = rig.driver();
    assert!(drv.enable_msix());
    let mut drv = drv;
    let mut qs = bring_up(
        &mut drv,
        ALL_FEATURES,
        &[(0, None, Some(1)), (1, None, Some(2)), (2, None, Some(3))],
    );
    let ev = qs.pop().unwrap();
    let tx = qs.pop().unwrap();
    let rx = qs.pop().unwrap();
    let mut h = Host {
        bus: rig.bus(),
        drv,
        rx,
        tx,
        _ev: ev,
        rx_bufs: Default::default(),
    };
    for _ in 0..32 {
        let a = h.bus.alloc(u64::from(RX_BUF), 64).unwrap();
        let head = h.rx.add(&[(a, RX_BUF, true)]).unwrap();
        h.rx_bufs.insert(head, a);
    }
    h.rx.kick().unwrap();
    h
}

impl Host {
    /// Sends a packet: header and payload in two descriptors, as Linux does.
    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let a = self.bus.alloc(HEADER_LEN as u64, 8).unwrap();
        self.bus.ram_write(a, &hdr.encode()).unwrap();
        let mut bufs = vec![(a, HEADER_LEN as u32, false)];
        if !payload.is_empty() {
            let p = self.bus.alloc(payload.len() as u64, 8).unwrap();
            self.bus.ram_write(p, payload).unwrap();
            bufs.push((p, payload.len() as u32, false));
        }
        self.tx.add(&bufs).unwrap();
        self.tx.kick().unwrap();
        wait_used_strict(&self.bus, &mut self.tx);
    }

    /// The next packet from the device (the buffer is posted again).
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let (head, len) = wait_used_strict(&self.bus, &mut self.rx);
        let a = self.rx_bufs.remove(&head).expect("a posted head");
        assert!(
            len as usize >= HEADER_LEN && len <= RX_BUF,
            "used length {len}"
        );
        let mut raw = vec![0u8; len as usize];
        self.bus.ram_read(a, &mut raw).unwrap();
        let h = Header::decode(raw[..HEADER_LEN].try_into().unwrap());
        assert_eq!(h.len as usize, len as usize - HEADER_LEN, "{h:?}");
        let head = self.rx.add(&[(a, RX_BUF, true)]).unwrap();
        self.rx_bufs.insert(head, a);
        self.rx.kick().unwrap();
        (h, raw[HEADER_LEN..].to_vec())
    }
}

fn from_host(op: u16, src: u32, dst: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: ENDPOINT_CID,
        src_port: src,
        dst_port: dst,
        ty: TYPE_STREAM,
        op,
        buf_alloc: 1 << 20,
        ..Header::default()
    }
}

fn device(dir: &std::path::Path) -> VsockDevice {
    VsockDevice::new(VsockConfig {
        guest_cid: CID,
        uds_path: dir.join("v.sock"),
        conn_buf: 64 * 1024,
        max_conns: 8,
        queue_size: 64,
        connect_timeout: Duration::from_millis(500),
    })
    .unwrap()
}

#[test]
fn vsock_connection_through_the_function() {
    bounded(LIMIT, || {
        let dir = scratch("conn");
        let rig = rig(Box::new(device(&dir)));
        let mut h = up(&rig);
        assert_eq!(h.drv.device_type(), 19);
        let mut cid = [0u8; 8];
        h.drv.read_config(0, &mut cid).unwrap();
        assert_eq!(u64::from_le_bytes(cid), CID);

        // Nobody listens on 4000: RST.
        h.send(from_host(OP_REQUEST, 1234, 4000), &[]);
        let (p, _) = h.recv();
        assert_eq!(
            (p.op, p.src_port, p.dst_port, p.dst_cid),
            (OP_RST, 4000, 1234, CID)
        );

        let l = UnixListener::bind(dir.join("v.sock_5000")).unwrap();
        h.send(from_host(OP_REQUEST, 1234, 5000), &[]);
        let (p, _) = h.recv();
        assert_eq!(p.op, OP_RESPONSE);
        let (mut s, _) = l.accept().unwrap();
        let data = Prng::new(5).bytes(50_000);
        let mut rw = from_host(OP_RW, 1234, 5000);
        for c in data.chunks(10_000) {
            rw.len = c.len() as u32;
            h.send(rw, c);
        }
        let mut got = vec![0u8; data.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, data);
        // Endpoint to host: 10 000 bytes come back in 4 KiB packets.
        s.write_all(&data[..10_000]).unwrap();
        let mut back = Vec::new();
        while back.len() < 10_000 {
            let (p, d) = h.recv();
            match p.op {
                OP_RW => back.extend(d),
                OP_CREDIT_UPDATE => {}
                op => panic!("unexpected op {op}"),
            }
        }
        assert_eq!(back, data[..10_000]);
        drop(h);
        rig.finish();
    });
}

#[test]
fn vsock_short_transmit_chain_needs_reset() {
    bounded(LIMIT, || {
        let dir = scratch("short");
        let rig = rig(Box::new(device(&dir)));
        let mut h = up(&rig);
        let a = h.bus.alloc(16, 8).unwrap();
        h.tx.add(&[(a, 10, false)]).unwrap();
        h.tx.kick().unwrap();
        assert!(
            wait_until(WAIT, || h.drv.status() & NEEDS_RESET != 0),
            "DEVICE_NEEDS_RESET not set (status {:#x})",
            h.drv.status()
        );
        drop(h);
        rig.finish();
    });
}

#[test]
fn vsock_driver_reset_closes_connections_and_a_new_driver_starts_clean() {
    bounded(LIMIT, || {
        let dir = scratch("reset");
        let rig = rig(Box::new(device(&dir)));
        let l = UnixListener::bind(dir.join("v.sock_5000")).unwrap();
        let mut h = up(&rig);
        h.send(from_host(OP_REQUEST, 1234, 5000), &[]);
        assert_eq!(h.recv().0.op, OP_RESPONSE);
        let (mut s, _) = l.accept().unwrap();
        h.drv.reset().unwrap();
        assert_eq!(h.drv.status(), 0);
        // The endpoint's side of the connection closes with the driver's.
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        drop(h);
        let mut h = up(&rig);
        h.send(from_host(OP_REQUEST, 1234, 5000), &[]);
        let (p, _) = h.recv();
        assert_eq!(
            p.op, OP_RESPONSE,
            "the same ports open again after the reset"
        );
        let (mut s, _) = l.accept().unwrap();
        let mut rw = from_host(OP_RW, 1234, 5000);
        rw.len = 3;
        h.send(rw, b"abc");
        let mut got = [0u8; 3];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abc");
        drop(h);
        rig.finish();
    });
}

#[test]
fn vsock_endpoint_connect_times_out_when_the_host_never_answers() {
    bounded(LIMIT, || {
        let dir = scratch("timeout");
        let rig = rig(Box::new(device(&dir)));
        let mut h = up(&rig);
        let mut app = std::os::unix::net::UnixStream::connect(dir.join("v.sock")).unwrap();
        app.write_all(b"CONNECT 9000\n").unwrap();
        let (req, _) = h.recv();
        assert_eq!((req.op, req.dst_port, req.dst_cid), (OP_REQUEST, 9000, CID));
        // No RESPONSE: the device's own timer (the poller's tick) ends it.
        app.set_read_timeout(Some(WAIT)).unwrap();
        let mut reply = String::new();
        app.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "ERR timeout\n");
        let (rst, _) = h.recv();
        assert_eq!(
            (rst.op, rst.src_port, rst.dst_port),
            (OP_RST, req.src_port, 9000)
        );
        drop(h);
        rig.finish();
    });
}
