//! A minimal vfio-user client for the tests, written independently of the server's wire code
//! (its own header encoding, `vmm-sys-util`'s `ScmSocket` for descriptors) so that a mistake
//! in one is not mirrored in the other. It speaks like QEMU's `hw/vfio-user` client: the same
//! VERSION capabilities, request sizes and `argsz` values.

#![allow(dead_code)]

use libc::{c_void, iovec};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const DEVICE_GET_REGION_INFO: u16 = 5;
pub const DEVICE_GET_IRQ_INFO: u16 = 7;
pub const DEVICE_SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DMA_READ: u16 = 11;
pub const DEVICE_RESET: u16 = 13;
pub const REGION_WRITE_MULTI: u16 = 15;

pub const FLAG_REPLY: u32 = 0x1;
pub const FLAG_NO_REPLY: u32 = 0x10;
pub const FLAG_ERROR: u32 = 0x20;

/// The capabilities QEMU 10.x proposes (hw/vfio-user/proxy.c caps_json()).
pub const QEMU_CAPS: &str = r#"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#;

/// A received message.
#[derive(Debug)]
pub struct Msg {
    pub id: u16,
    pub command: u16,
    pub size: u32,
    pub flags: u32,
    pub error: u32,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Msg {
    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }

    pub fn u16(&self, off: usize) -> u16 {
        u16::from_ne_bytes(self.body[off..off + 2].try_into().unwrap())
    }

    pub fn u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.body[off..off + 4].try_into().unwrap())
    }

    pub fn u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.body[off..off + 8].try_into().unwrap())
    }

    /// Asserts a successful reply and returns self.
    pub fn ok(self) -> Self {
        assert!(
            !self.is_error(),
            "command {} failed with errno {}",
            self.command,
            self.error
        );
        assert_eq!(self.flags & 0xf, FLAG_REPLY);
        self
    }

    /// Asserts an error reply with `errno`.
    pub fn err(self, errno: i32) {
        assert!(
            self.is_error(),
            "command {} unexpectedly succeeded",
            self.command
        );
        assert_eq!(self.error, errno as u32, "command {}", self.command);
        assert_eq!(self.size, 16, "error replies carry only the header");
    }
}

/// Appends host-order integers.
#[derive(Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

pub struct Client {
    pub sock: UnixStream,
    next_id: u16,
}

impl Client {
    /// Connects (retrying briefly: the server may be between clients).
    pub fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match UnixStream::connect(path) {
                Ok(sock) => {
                    sock.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    return Client {
                        sock,
                        next_id: 0x100,
                    };
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot connect to {}: {e}", path.display()),
            }
        }
    }

    /// Connects and negotiates the version like QEMU.
    pub fn connect_negotiated(path: &Path) -> Client {
        let mut c = Client::connect(path);
        c.version(QEMU_CAPS).ok();
        c
    }

    /// Sends raw bytes with descriptors.
    pub fn send_raw(&self, bytes: &[u8], fds: &[RawFd]) {
        let mut sent = 0;
        while sent < bytes.len() {
            let n = self
                .sock
                .send_with_fds(&[&bytes[sent..]], if sent == 0 { fds } else { &[] })
                .expect("send");
            sent += n;
        }
    }

    /// Encodes a message header followed by `body`.
    pub fn message(id: u16, command: u16, flags: u32, body: &[u8]) -> Vec<u8> {
        Bytes::default()
            .u16(id)
            .u16(command)
            .u32(16 + body.len() as u32)
            .u32(flags)
            .u32(0)
            .raw(body)
            .0
    }

    /// Sends a command; returns its id.
    pub fn send(&mut self, command: u16, flags: u32, body: &[u8], fds: &[RawFd]) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send_raw(&Self::message(id, command, flags, body), fds);
        id
    }

    fn recv_exact(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let mut raw = [-1 as RawFd; 8];
            let rest = &mut buf[done..];
            let mut iov = [iovec {
                iov_base: rest.as_mut_ptr() as *mut c_void,
                iov_len: rest.len(),
            }];
            // SAFETY: the iovec covers `rest`, which we exclusively borrow.
            let (n, nfds) = unsafe { self.sock.recv_with_fds(&mut iov, &mut raw) }
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            for fd in &raw[..nfds] {
                // SAFETY: recv_with_fds handed us ownership of these descriptors.
                fds.push(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }

    /// Receives one message.
    pub fn recv(&self) -> io::Result<Msg> {
        let mut fds = Vec::new();
        let mut h = [0u8; 16];
        self.recv_exact(&mut h, &mut fds)?;
        let size = u32::from_ne_bytes(h[4..8].try_into().unwrap());
        assert!(size >= 16);
        let mut body = vec![0; size as usize - 16];
        self.recv_exact(&mut body, &mut fds)?;
        Ok(Msg {
            id: u16::from_ne_bytes([h[0], h[1]]),
            command: u16::from_ne_bytes([h[2], h[3]]),
            size,
            flags: u32::from_ne_bytes(h[8..12].try_into().unwrap()),
            error: u32::from_ne_bytes(h[12..16].try_into().unwrap()),
            body,
            fds,
        })
    }

    /// Whether the server closed the connection (EOF within the read timeout).
    pub fn closed_by_server(&self) -> bool {
        let mut fds = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match self.recv_exact(&mut b, &mut fds) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return true,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return true,
                Err(_) => return false,
                // Drain anything the server said before closing (e.g. an error reply).
                Ok(()) => continue,
            }
        }
    }

    /// Sends a command and waits for its reply.
    pub fn request(&mut self, command: u16, body: &[u8], fds: &[RawFd]) -> Msg {
        let id = self.send(command, 0, body, fds);
        let m = self.recv().expect("reply");
        assert_eq!(m.id, id, "reply id");
        assert_eq!(m.command, command, "reply command");
        assert_eq!(m.flags & 0xf, FLAG_REPLY);
        m
    }

    pub fn version(&mut self, caps: &str) -> Msg {
        let mut body = Bytes::default().u16(0).u16(0).raw(caps.as_bytes()).0;
        body.push(0);
        self.request(VERSION, &body, &[])
    }

    pub fn device_info(&mut self) -> Msg {
        // QEMU: argsz = sizeof(VFIOUserDeviceInfo) - sizeof(hdr) = 16.
        let body = Bytes::default().u32(16).u32(0).u32(0).u32(0).0;
        self.request(DEVICE_GET_INFO, &body, &[])
    }

    pub fn region_info(&mut self, index: u32, argsz: u32) -> Msg {
        // QEMU sends the 32-byte vfio_region_info whatever argsz says.
        let body = Bytes::default()
            .u32(argsz)
            .u32(0)
            .u32(index)
            .u32(0)
            .u64(0)
            .u64(0)
            .0;
        self.request(DEVICE_GET_REGION_INFO, &body, &[])
    }

    /// Region info the way QEMU gets it: argsz 32 first, again with the argsz the server asks.
    pub fn region_info_full(&mut self, index: u32) -> Msg {
        let first = self.region_info(index, 32).ok();
        let needed = first.u32(0);
        if needed > 32 {
            self.region_info(index, needed).ok()
        } else {
            first
        }
    }

    pub fn irq_info(&mut self, index: u32) -> Msg {
        let body = Bytes::default().u32(16).u32(0).u32(index).u32(0).0;
        self.request(DEVICE_GET_IRQ_INFO, &body, &[])
    }

    pub fn set_irqs(
        &mut self,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: &[RawFd],
    ) -> Msg {
        let body = Bytes::default()
            .u32(20 + data.len() as u32)
            .u32(flags)
            .u32(index)
            .u32(start)
            .u32(count)
            .raw(data)
            .0;
        self.request(DEVICE_SET_IRQS, &body, fds)
    }

    pub fn dma_map(
        &mut self,
        iova: u64,
        size: u64,
        offset: u64,
        flags: u32,
        fd: Option<RawFd>,
    ) -> Msg {
        let body = Bytes::default()
            .u32(32)
            .u32(flags)
            .u64(offset)
            .u64(iova)
            .u64(size)
            .0;
        let fds: Vec<RawFd> = fd.into_iter().collect();
        self.request(DMA_MAP, &body, &fds)
    }

    pub fn dma_unmap(&mut self, iova: u64, size: u64, flags: u32) -> Msg {
        let body = Bytes::default().u32(24).u32(flags).u64(iova).u64(size).0;
        self.request(DMA_UNMAP, &body, &[])
    }

    pub fn region_read(&mut self, region: u32, offset: u64, count: u32) -> Msg {
        let body = Bytes::default().u64(offset).u32(region).u32(count).0;
        self.request(REGION_READ, &body, &[])
    }

    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Msg {
        let body = Self::region_write_body(region, offset, data);
        self.request(REGION_WRITE, &body, &[])
    }

    pub fn region_write_body(region: u32, offset: u64, data: &[u8]) -> Vec<u8> {
        Bytes::default()
            .u64(offset)
            .u32(region)
            .u32(data.len() as u32)
            .raw(data)
            .0
    }
}

/// A fresh eventfd and a duplicate to read it from.
pub fn eventfd() -> (OwnedFd, OwnedFd) {
    // SAFETY: eventfd and dup create descriptors we take ownership of.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        assert!(fd >= 0);
        let dup = libc::dup(fd);
        assert!(dup >= 0);
        (OwnedFd::from_raw_fd(fd), OwnedFd::from_raw_fd(dup))
    }
}

/// Reads (and resets) an eventfd counter; 0 if it was not signalled.
pub fn eventfd_count(fd: &OwnedFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a descriptor we own.
    let r = unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut c_void, 8) };
    if r == 8 {
        v
    } else {
        0
    }
}

/// A memfd of `len` bytes.
pub fn memfd(len: usize) -> OwnedFd {
    // SAFETY: memfd_create with a static NUL-terminated name; ftruncate on the fresh fd.
    unsafe {
        let fd = libc::memfd_create(c"vfio-user-test".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        OwnedFd::from_raw_fd(fd)
    }
}
