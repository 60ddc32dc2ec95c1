//! One client connection: reads messages, validates them, carries out commands and replies.
//!
//! Framing errors (a header announcing fewer than 16 bytes or more than [`MAX_MESSAGE_SIZE`],
//! a message cut short, a stalled client) end the session: the stream can no longer be
//! trusted. A message that is framed correctly but malformed inside (short body, bad flags,
//! wrong descriptor count, out-of-range offsets) gets an error reply carrying an errno and the
//! session goes on. Commands with the NO_REPLY flag get no reply, not even an error.
//! Descriptors a command does not use are closed.

use crate::access::Errno;
use crate::caps::{our_caps, parse_caps, ClientCaps};
use crate::dma::{map_client_memory, DmaError, DmaMap, DmaTable, MAX_DMA_BYTES};
use crate::function::Function;
use crate::irq::{Action, IrqError};
use crate::protocol::{
    cmd, flags, Body, BodyBuilder, Header, DEVICE_INFO_SIZE, DMA_MAP_SIZE, DMA_UNMAP_SIZE,
    HEADER_SIZE, IRQ_INFO_SIZE, IRQ_SET_SIZE, MAX_DATA_XFER, MAX_DMA_MAPS, MAX_MESSAGE_SIZE,
    MAX_MSG_FDS, NUM_IRQS, NUM_REGIONS, REGION_INFO_SIZE, REGION_RW_SIZE, VERSION_MAJOR,
    VERSION_MINOR, WRITE_MULTI_DATA, WRITE_MULTI_ENTRY_SIZE, WRITE_MULTI_MAX,
};
use crate::region::encode_region_info;
use crate::socket::{Conn, Ready, XferError};
use crate::stats::{bump, Counters};
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio as vb;

/// How long the rest of a message may take to arrive once it started, and how long the client
/// may take to accept a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed the connection between messages.
    Closed,
    /// The client broke the protocol or the connection failed; the session was dropped.
    Dropped(String),
    /// The controller is shutting down.
    Shutdown,
}

/// A successful command's reply.
struct Reply {
    body: Vec<u8>,
    fd: Option<RawFd>,
}

impl Reply {
    fn empty() -> Self {
        Reply {
            body: Vec::new(),
            fd: None,
        }
    }

    fn body(body: Vec<u8>) -> Self {
        Reply { body, fd: None }
    }
}

/// A failed command: the errno to report, and whether to end the session afterwards.
struct Fail {
    errno: Errno,
    close: bool,
}

impl From<Errno> for Fail {
    fn from(errno: Errno) -> Self {
        Fail {
            errno,
            close: false,
        }
    }
}

type CmdResult = Result<Reply, Fail>;

/// The state of one client connection.
pub(crate) struct Session<'a> {
    conn: Conn,
    func: &'a Function,
    dma: &'a DmaTable,
    counters: &'a Counters,
    /// Set once VERSION succeeded; other commands are refused before.
    caps: Option<ClientCaps>,
}

impl<'a> Session<'a> {
    pub fn new(conn: Conn, func: &'a Function, dma: &'a DmaTable, counters: &'a Counters) -> Self {
        Session {
            conn,
            func,
            dma,
            counters,
            caps: None,
        }
    }

    /// Serves the client until it leaves, misbehaves, or the controller shuts down.
    pub fn run(&mut self) -> End {
        loop {
            match self.conn.wait_readable() {
                Ok(Ready::Socket) => {}
                Ok(Ready::Woken) => return End::Shutdown,
                Ok(Ready::Timeout) => continue,
                Err(e) => return End::Dropped(format!("poll: {e}")),
            }
            match self.one_message() {
                Ok(()) => {}
                Err(end) => return end,
            }
        }
    }

    fn drop_with(&self, why: String) -> End {
        bump(&self.counters.protocol_errors);
        End::Dropped(why)
    }

    fn xfer_end(&self, e: XferError, what: &str) -> End {
        match e {
            XferError::Woken => End::Shutdown,
            e => self.drop_with(format!("{what}: {e}")),
        }
    }

    /// Reads, executes and answers one message.
    fn one_message(&mut self) -> Result<(), End> {
        let mut fds = Vec::new();
        let mut truncated = false;
        let mut hb = [0u8; HEADER_SIZE];
        // The first byte is there (or EOF): give the rest of the message a deadline.
        let deadline = Instant::now() + IO_TIMEOUT;
        match self
            .conn
            .recv_exact(&mut hb[..1], &mut fds, &mut truncated, deadline)
        {
            Ok(()) => {}
            Err(XferError::Closed) => return Err(End::Closed),
            Err(e) => return Err(self.xfer_end(e, "reading header")),
        }
        self.conn
            .recv_exact(&mut hb[1..], &mut fds, &mut truncated, deadline)
            .map_err(|e| self.xfer_end(e, "truncated header"))?;
        let hdr = Header::decode(&hb);
        let size = hdr.size as usize;
        if !(HEADER_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
            let errno = if size < HEADER_SIZE {
                libc::EINVAL
            } else {
                libc::E2BIG
            };
            // Best effort: tell the client why before hanging up.
            if hdr.msg_type() == flags::TYPE_COMMAND && !hdr.no_reply() {
                let _ = self.send_error(&hdr, errno);
            }
            return Err(self.drop_with(format!(
                "message {} ({}) announces {} bytes",
                hdr.id,
                crate::protocol::command_name(hdr.command),
                hdr.size
            )));
        }
        let mut body = vec![0u8; size - HEADER_SIZE];
        self.conn
            .recv_exact(&mut body, &mut fds, &mut truncated, deadline)
            .map_err(|e| self.xfer_end(e, "truncated message"))?;

        match hdr.msg_type() {
            flags::TYPE_COMMAND => {}
            flags::TYPE_REPLY => {
                // We never send commands, so no reply is expected.
                bump(&self.counters.protocol_errors);
                log::warn!(
                    "vfio-user: ignoring unexpected reply {} to {}",
                    hdr.id,
                    crate::protocol::command_name(hdr.command)
                );
                return Ok(());
            }
            t => {
                bump(&self.counters.protocol_errors);
                log::warn!("vfio-user: message {} has unknown type {t}", hdr.id);
                if !hdr.no_reply() {
                    self.send_error(&hdr, libc::EINVAL)?;
                }
                return Ok(());
            }
        }
        self.counters.command(hdr.command);
        log::trace!(
            "vfio-user: {} id {} size {} fds {}",
            crate::protocol::command_name(hdr.command),
            hdr.id,
            hdr.size,
            fds.len()
        );

        // Descriptors lost to truncation, or anything but VERSION before the handshake.
        let refused = truncated
            || fds.len() > MAX_MSG_FDS
            || (self.caps.is_none() && hdr.command != cmd::VERSION);
        let result = if refused {
            Err(Fail::from(libc::EINVAL))
        } else {
            self.execute(hdr.command, Body(&body), fds)
        };

        match result {
            Ok(reply) => {
                if !hdr.no_reply() {
                    self.send_reply(&hdr, &reply)?;
                }
                Ok(())
            }
            Err(fail) => {
                bump(&self.counters.protocol_errors);
                log::debug!(
                    "vfio-user: {} id {} failed: errno {}",
                    crate::protocol::command_name(hdr.command),
                    hdr.id,
                    fail.errno
                );
                if !hdr.no_reply() {
                    self.send_error(&hdr, fail.errno)?;
                }
                if fail.close {
                    return Err(End::Dropped(format!(
                        "{} refused",
                        crate::protocol::command_name(hdr.command)
                    )));
                }
                Ok(())
            }
        }
    }

    fn send_reply(&self, req: &Header, reply: &Reply) -> Result<(), End> {
        let hdr = Header {
            id: req.id,
            command: req.command,
            size: (HEADER_SIZE + reply.body.len()) as u32,
            flags: flags::TYPE_REPLY,
            error: 0,
        };
        let fds: Vec<RawFd> = reply.fd.into_iter().collect();
        self.conn
            .send(
                &[&hdr.encode(), &reply.body],
                &fds,
                Instant::now() + IO_TIMEOUT,
            )
            .map_err(|e| self.xfer_end(e, "sending reply"))
    }

    fn send_error(&self, req: &Header, errno: Errno) -> Result<(), End> {
        let hdr = Header {
            id: req.id,
            command: req.command,
            size: HEADER_SIZE as u32,
            flags: flags::TYPE_REPLY | flags::ERROR,
            error: errno as u32,
        };
        self.conn
            .send(&[&hdr.encode()], &[], Instant::now() + IO_TIMEOUT)
            .map_err(|e| self.xfer_end(e, "sending error reply"))
    }

    fn execute(&mut self, command: u16, body: Body<'_>, fds: Vec<OwnedFd>) -> CmdResult {
        // Only DMA_MAP and SET_IRQS take descriptors.
        if !fds.is_empty() && command != cmd::DMA_MAP && command != cmd::DEVICE_SET_IRQS {
            return Err(libc::EINVAL.into());
        }
        match command {
            cmd::VERSION => self.version(body),
            cmd::DMA_MAP => self.dma_map(body, fds),
            cmd::DMA_UNMAP => self.dma_unmap(body),
            cmd::DEVICE_GET_INFO => self.device_info(body),
            cmd::DEVICE_GET_REGION_INFO => self.region_info(body),
            cmd::DEVICE_GET_IRQ_INFO => self.irq_info(body),
            cmd::DEVICE_SET_IRQS => self.set_irqs(body, fds),
            cmd::REGION_READ => self.region_read(body),
            cmd::REGION_WRITE => self.region_write(body),
            cmd::REGION_WRITE_MULTI => self.region_write_multi(body),
            cmd::DEVICE_RESET => {
                self.func.reset(self.counters);
                Ok(Reply::empty())
            }
            // No device features (migration, DMA logging): ENOTTY, as the kernel's ioctl and
            // libvfio-user answer an unsupported VFIO_DEVICE_FEATURE.
            cmd::DEVICE_FEATURE => Err(libc::ENOTTY.into()),
            // Server-to-client commands: a client has no business sending them.
            cmd::DMA_READ | cmd::DMA_WRITE => Err(libc::EINVAL.into()),
            _ => Err(libc::ENOSYS.into()),
        }
    }

    fn version(&mut self, body: Body<'_>) -> CmdResult {
        if self.caps.is_some() {
            return Err(libc::EINVAL.into());
        }
        let (Some(major), Some(_minor)) = (body.u16(0), body.u16(2)) else {
            return Err(Fail {
                errno: libc::EINVAL,
                close: true,
            });
        };
        if major != VERSION_MAJOR {
            log::warn!("vfio-user: client speaks protocol {major}.x, we speak {VERSION_MAJOR}.x");
            return Err(Fail {
                errno: libc::ENOTSUP,
                close: true,
            });
        }
        let caps = parse_caps(&body.0[4..]).map_err(|e| {
            log::warn!("vfio-user: bad VERSION: {e}");
            Fail {
                errno: libc::EINVAL,
                close: true,
            }
        })?;
        self.caps = Some(caps);
        let json = our_caps(&caps);
        Ok(Reply::body(
            BodyBuilder::with_capacity(json.len() + 5)
                .u16(VERSION_MAJOR)
                .u16(VERSION_MINOR)
                .bytes(json.as_bytes())
                .bytes(&[0])
                .build(),
        ))
    }

    fn dma_map(&mut self, body: Body<'_>, mut fds: Vec<OwnedFd>) -> CmdResult {
        if body.len() < DMA_MAP_SIZE || fds.len() > 1 {
            return Err(libc::EINVAL.into());
        }
        let (fl, offset, iova, size) = (
            body.u32(4).unwrap_or(0),
            body.u64(8).unwrap_or(0),
            body.u64(16).unwrap_or(0),
            body.u64(24).unwrap_or(0),
        );
        let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
        if fl & !rw != 0 || size == 0 || iova.checked_add(size).is_none() {
            return Err(libc::EINVAL.into());
        }
        let readable = fl & vb::VFIO_DMA_MAP_FLAG_READ != 0;
        let writable = fl & vb::VFIO_DMA_MAP_FLAG_WRITE != 0;
        if !fds.is_empty() && self.dma.mapped_bytes().saturating_add(size) > MAX_DMA_BYTES {
            log::warn!("vfio-user: DMA_MAP beyond {MAX_DMA_BYTES:#x} mapped bytes refused");
            return Err(libc::ENOSPC.into());
        }
        let mem = match fds.pop() {
            Some(fd) if readable || writable => Some(
                map_client_memory(fd, offset, size, writable).inspect_err(|&errno| {
                    log::warn!(
                        "vfio-user: cannot map DMA region {iova:#x}+{size:#x} at fd offset \
                         {offset:#x}: {}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                })?,
            ),
            _ => None,
        };
        if mem.is_none() {
            log::debug!(
                "vfio-user: DMA region {iova:#x}+{size:#x} without descriptor (not accessible)"
            );
        }
        let map = DmaMap {
            size,
            mem,
            readable,
            writable,
        };
        self.dma
            .insert(iova, map, MAX_DMA_MAPS)
            .map_err(|e| match e {
                DmaError::Exists => libc::EEXIST,
                DmaError::TooMany => libc::ENOSPC,
                DmaError::Invalid | DmaError::Partial => libc::EINVAL,
            })?;
        bump(&self.counters.dma_maps);
        Ok(Reply::empty())
    }

    fn dma_unmap(&mut self, body: Body<'_>) -> CmdResult {
        if body.len() < DMA_UNMAP_SIZE {
            return Err(libc::EINVAL.into());
        }
        let (fl, iova, size) = (
            body.u32(4).unwrap_or(0),
            body.u64(8).unwrap_or(0),
            body.u64(16).unwrap_or(0),
        );
        let removed = if fl == vb::VFIO_DMA_UNMAP_FLAG_ALL {
            // As in linux/vfio.h: "iova and size must be 0".
            if iova != 0 || size != 0 {
                return Err(libc::EINVAL.into());
            }
            self.dma.clear()
        } else if fl == 0 {
            self.dma
                .remove_range(iova, size)
                .map_err(|_| libc::EINVAL)?
        } else {
            // Dirty bitmaps and vaddr updates are not supported.
            return Err(libc::EINVAL.into());
        };
        for _ in 0..removed {
            bump(&self.counters.dma_unmaps);
        }
        // The reply carries the request's unmap structure.
        Ok(Reply::body(body.0[..DMA_UNMAP_SIZE].to_vec()))
    }

    fn device_info(&mut self, body: Body<'_>) -> CmdResult {
        let argsz = body.u32(0).ok_or(libc::EINVAL)?;
        if (argsz as usize) < DEVICE_INFO_SIZE {
            return Err(libc::EINVAL.into());
        }
        Ok(Reply::body(
            BodyBuilder::with_capacity(DEVICE_INFO_SIZE)
                .u32(DEVICE_INFO_SIZE as u32)
                .u32(vb::VFIO_DEVICE_FLAGS_PCI | vb::VFIO_DEVICE_FLAGS_RESET)
                .u32(NUM_REGIONS)
                .u32(NUM_IRQS)
                .build(),
        ))
    }

    fn region_info(&mut self, body: Body<'_>) -> CmdResult {
        let (Some(argsz), Some(index)) = (body.u32(0), body.u32(8)) else {
            return Err(libc::EINVAL.into());
        };
        if (argsz as usize) < REGION_INFO_SIZE {
            return Err(libc::EINVAL.into());
        }
        let allow_mmap = self.caps.is_some_and(|c| c.max_msg_fds >= 1);
        let info = self
            .func
            .region_info(index, allow_mmap)
            .ok_or(libc::EINVAL)?;
        let (body, fd) = encode_region_info(index, &info, argsz);
        Ok(Reply { body, fd })
    }

    fn irq_info(&mut self, body: Body<'_>) -> CmdResult {
        let (Some(argsz), Some(index)) = (body.u32(0), body.u32(8)) else {
            return Err(libc::EINVAL.into());
        };
        if (argsz as usize) < IRQ_INFO_SIZE || index >= NUM_IRQS {
            return Err(libc::EINVAL.into());
        }
        let irqs = self.func.irqs();
        Ok(Reply::body(
            BodyBuilder::with_capacity(IRQ_INFO_SIZE)
                .u32(IRQ_INFO_SIZE as u32)
                .u32(irqs.info_flags(index))
                .u32(index)
                .u32(irqs.count(index))
                .build(),
        ))
    }

    fn set_irqs(&mut self, body: Body<'_>, fds: Vec<OwnedFd>) -> CmdResult {
        if body.len() < IRQ_SET_SIZE {
            return Err(libc::EINVAL.into());
        }
        let (fl, index, start, count) = (
            body.u32(4).unwrap_or(0),
            body.u32(8).unwrap_or(0),
            body.u32(12).unwrap_or(0),
            body.u32(16).unwrap_or(0),
        );
        let data = fl & vb::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = match fl & vb::VFIO_IRQ_SET_ACTION_TYPE_MASK {
            vb::VFIO_IRQ_SET_ACTION_MASK => Action::Mask,
            vb::VFIO_IRQ_SET_ACTION_UNMASK => Action::Unmask,
            vb::VFIO_IRQ_SET_ACTION_TRIGGER => Action::Trigger,
            _ => return Err(libc::EINVAL.into()),
        };
        let known = vb::VFIO_IRQ_SET_DATA_TYPE_MASK | vb::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if fl & !known != 0 || index >= NUM_IRQS {
            return Err(libc::EINVAL.into());
        }
        log::debug!(
            "vfio-user: SET_IRQS index {index} start {start} count {count} flags {fl:#x}, {} fds",
            fds.len()
        );
        let inval = |_: IrqError| libc::EINVAL;
        let mut changed = false;
        match data {
            vb::VFIO_IRQ_SET_DATA_EVENTFD => {
                // Mask/unmask notification eventfds (KVM's INTx resampling) are not supported;
                // QEMU then handles the INTx EOI itself and sends ACTION_UNMASK.
                if action != Action::Trigger {
                    return Err(libc::EINVAL.into());
                }
                self.func
                    .irqs()
                    .set_eventfds(index, start, count, fds)
                    .map_err(inval)?;
                changed = true;
            }
            vb::VFIO_IRQ_SET_DATA_NONE | vb::VFIO_IRQ_SET_DATA_BOOL => {
                if !fds.is_empty() {
                    return Err(libc::EINVAL.into());
                }
                if data == vb::VFIO_IRQ_SET_DATA_NONE && count == 0 && action == Action::Trigger {
                    self.func.irqs().disable_index(index).map_err(inval)?;
                    changed = true;
                } else {
                    let which: Vec<bool> = if data == vb::VFIO_IRQ_SET_DATA_BOOL {
                        let end = IRQ_SET_SIZE
                            .checked_add(count as usize)
                            .ok_or(libc::EINVAL)?;
                        let bytes = body.0.get(IRQ_SET_SIZE..end).ok_or(libc::EINVAL)?;
                        bytes.iter().map(|&b| b != 0).collect()
                    } else {
                        Vec::new()
                    };
                    let fired = self
                        .func
                        .irqs()
                        .act(index, start, count, action, &which)
                        .map_err(inval)?;
                    for _ in 0..fired {
                        bump(&self.counters.irqs_raised);
                    }
                }
            }
            _ => return Err(libc::EINVAL.into()),
        }
        if changed {
            self.func.handler.irqs_changed();
        }
        Ok(Reply::empty())
    }

    /// Parses the offset/region/count prefix of a region read or write.
    fn rw_prefix(body: Body<'_>) -> Result<(u64, u32, usize), Fail> {
        let (Some(offset), Some(region), Some(count)) = (body.u64(0), body.u32(8), body.u32(12))
        else {
            return Err(libc::EINVAL.into());
        };
        let count = count as usize;
        if count > MAX_DATA_XFER {
            return Err(libc::E2BIG.into());
        }
        Ok((offset, region, count))
    }

    fn region_read(&mut self, body: Body<'_>) -> CmdResult {
        let (offset, region, count) = Self::rw_prefix(body)?;
        let mut data = vec![0u8; REGION_RW_SIZE + count];
        self.func
            .region_read(region, offset, &mut data[REGION_RW_SIZE..], self.counters)?;
        data[0..8].copy_from_slice(&offset.to_ne_bytes());
        data[8..12].copy_from_slice(&region.to_ne_bytes());
        data[12..16].copy_from_slice(&(count as u32).to_ne_bytes());
        Ok(Reply::body(data))
    }

    fn region_write(&mut self, body: Body<'_>) -> CmdResult {
        let (offset, region, count) = Self::rw_prefix(body)?;
        let data = body
            .0
            .get(REGION_RW_SIZE..REGION_RW_SIZE + count)
            .ok_or(libc::EINVAL)?;
        self.func
            .region_write(region, offset, data, self.counters)?;
        Ok(Reply::body(body.0[..REGION_RW_SIZE].to_vec()))
    }

    fn region_write_multi(&mut self, body: Body<'_>) -> CmdResult {
        // Only a client that proposed it in VERSION may use it.
        if !self.caps.is_some_and(|c| c.write_multiple) {
            return Err(libc::EINVAL.into());
        }
        let n = body.u64(0).ok_or(libc::EINVAL)?;
        if n > WRITE_MULTI_MAX {
            return Err(libc::EINVAL.into());
        }
        let n = n as usize;
        let entries = body
            .0
            .get(8..8 + n * WRITE_MULTI_ENTRY_SIZE)
            .ok_or(libc::EINVAL)?;
        // Validate every entry before carrying out any.
        let mut writes = Vec::with_capacity(n);
        for e in entries.chunks_exact(WRITE_MULTI_ENTRY_SIZE) {
            let e = Body(e);
            let (offset, region, count) = Self::rw_prefix(e)?;
            if count > WRITE_MULTI_DATA {
                return Err(libc::EINVAL.into());
            }
            self.func.check_access(region, offset, count)?;
            writes.push((offset, region, &e.0[REGION_RW_SIZE..REGION_RW_SIZE + count]));
        }
        for (offset, region, data) in writes {
            self.func
                .region_write(region, offset, data, self.counters)?;
        }
        Ok(Reply::body((n as u64).to_ne_bytes().to_vec()))
    }
}
