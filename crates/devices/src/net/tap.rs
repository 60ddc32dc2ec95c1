//! The endpoint side of the wire: an existing Linux TAP device, one non-blocking file
//! descriptor per queue pair (a multi-queue TAP for more than one pair), opened with
//! IFF_VNET_HDR and a 12-byte little-endian header so packets carry the virtio-net header and
//! offloads pass through in both directions.
//!
//! The TAP must already exist (e.g. `ip tuntap add dev tap0 mode tap multi_queue`): the
//! operator owns its addresses, MTU and placement (bridge, namespace). We check that the name
//! exists before `TUNSETIFF`, which would otherwise create a new, unconfigured TAP. (A TAP
//! deleted between the check and the open is created afresh by the kernel; it vanishes again
//! when we exit.)

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use thiserror::Error;

/// Header size set with `TUNSETVNETHDRSZ` (struct virtio_net_hdr_v1).
const VNET_HDR_SZ: libc::c_int = super::header::HDR_LEN as libc::c_int;

/// Why the TAP could not be used; each message is one line naming the TAP.
#[derive(Debug, Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("`{0}` is not a valid interface name")]
    BadName(String),
    /// No interface of that name in our network namespace.
    #[error("TAP device {0} does not exist (create it first, e.g. `ip tuntap add dev {0} mode tap multi_queue`)")]
    Missing(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    NoTun(#[source] io::Error),
    /// `TUNSETIFF` refused the device (not a TAP, multi-queue mismatch, busy, permissions).
    #[error("cannot attach to TAP device {name} with {queues} queue(s): {err}{}", attach_hint(.err, *.queues))]
    Attach {
        name: String,
        queues: u16,
        #[source]
        err: io::Error,
    },
    /// A configuration ioctl failed.
    #[error("TAP device {name}: {what} failed: {err}")]
    Setup {
        name: String,
        what: &'static str,
        #[source]
        err: io::Error,
    },
}

/// The likely reason `TUNSETIFF` refused a TAP with `queues` queues.
fn attach_hint(err: &io::Error, queues: u16) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EINVAL) if queues > 1 => " (is it a TAP created with `multi_queue`?)",
        Some(libc::EINVAL) => " (is it a TAP device?)",
        Some(libc::EBUSY) => " (another process has it open)",
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN or ownership of the TAP)",
        _ => "",
    }
}

/// An `ifreq` naming `name` (which fits: checked by [`Tap::open`]).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers/arrays); all zero
    // is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fds: Vec<OwnedFd>,
    multi_queue: bool,
    /// Whether each queue is attached (all are after open).
    attached: Vec<bool>,
}

impl Tap {
    /// Attaches `queues` non-blocking queues to the existing TAP `name` in the current network
    /// namespace, with the virtio-net header enabled and no offloads yet. For one queue a TAP
    /// created either way (single- or multi-queue) is accepted.
    pub fn open(name: &str, queues: u16) -> Result<Tap, TapError> {
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        {
            return Err(TapError::BadName(name.into()));
        }
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.into()))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.into()));
        }
        let attach = |mq: bool| -> Result<Vec<OwnedFd>, TapError> {
            let mut fds = Vec::with_capacity(usize::from(queues));
            for _ in 0..queues {
                // SAFETY: plain open(2) of a constant NUL-terminated path.
                let fd = unsafe {
                    libc::open(
                        c"/dev/net/tun".as_ptr(),
                        libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(TapError::NoTun(io::Error::last_os_error()));
                }
                // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let mut ifr = ifreq(name);
                let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
                if mq {
                    flags |= libc::IFF_MULTI_QUEUE;
                }
                ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
                // SAFETY: TUNSETIFF reads (and may update) the ifreq we pass, which lives for
                // the duration of the call.
                cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) }).map_err(
                    |err| TapError::Attach {
                        name: name.into(),
                        queues,
                        err,
                    },
                )?;
                fds.push(fd);
            }
            Ok(fds)
        };
        let (fds, multi_queue) = if queues > 1 {
            (attach(true)?, true)
        } else {
            match attach(false) {
                Ok(f) => (f, false),
                // A TAP created with multi_queue refuses single-queue attaches.
                Err(TapError::Attach { err, .. }) if err.raw_os_error() == Some(libc::EINVAL) => {
                    (attach(true)?, true)
                }
                Err(e) => return Err(e),
            }
        };
        let tap = Tap {
            name: name.into(),
            attached: vec![true; fds.len()],
            fds,
            multi_queue,
        };
        let fd = tap.fds[0].as_raw_fd();
        let setup = |what, r: io::Result<libc::c_int>| {
            r.map(|_| ()).map_err(|err| TapError::Setup {
                name: name.into(),
                what,
                err,
            })
        };
        let sz: libc::c_int = VNET_HDR_SZ;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, valid for the call.
        setup(
            "TUNSETVNETHDRSZ",
            cvt(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &sz) }),
        )?;
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int from the pointer, valid for the call.
        setup(
            "TUNSETVNETLE",
            cvt(unsafe { libc::ioctl(fd, libc::TUNSETVNETLE, &le) }),
        )?;
        setup("TUNSETOFFLOAD", tap.set_offload(0).map(|()| 0))?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of queues attached at open.
    pub fn queues(&self) -> usize {
        self.fds.len()
    }

    /// Whether the TAP is a multi-queue TAP (queues can be detached).
    pub fn is_multi_queue(&self) -> bool {
        self.multi_queue
    }

    /// The descriptor of queue `i`.
    pub fn fd(&self, i: usize) -> RawFd {
        self.fds[i].as_raw_fd()
    }

    /// The TAP's MTU.
    pub fn mtu(&self) -> io::Result<u32> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let s =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `s` was just created and is owned by nobody else.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let mut ifr = ifreq(&self.name);
        // SAFETY: SIOCGIFMTU fills the ifreq we pass, which lives for the duration of the call.
        cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) })?;
        // SAFETY: SIOCGIFMTU succeeded, so the union holds ifru_mtu.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Sets the offloads (`TUN_F_*`) the TAP may use for packets it hands us.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        cvt(unsafe { libc::ioctl(self.fd(0), libc::TUNSETOFFLOAD, flags as libc::c_ulong) })
            .map(|_| ())
    }

    /// Attaches or detaches queue `i` of a multi-queue TAP (a detached queue gets no packets;
    /// what it held is dropped). A no-op on a single-queue TAP or if already so.
    pub fn set_queue_enabled(&mut self, i: usize, enabled: bool) -> io::Result<()> {
        if !self.multi_queue || self.attached[i] == enabled {
            return Ok(());
        }
        let mut ifr = ifreq("");
        let flags = if enabled {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETQUEUE reads the ifreq we pass, which lives for the duration of the call.
        cvt(unsafe { libc::ioctl(self.fd(i), libc::TUNSETQUEUE, &mut ifr) })?;
        self.attached[i] = enabled;
        Ok(())
    }

    /// Reads one packet (header plus frame) from queue `i` without blocking.
    pub fn read(&self, i: usize, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd(i), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet (header plus frame) to queue `i` without blocking.
    pub fn write(&self, i: usize, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: `pkt` is valid for reads of `pkt.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd(i), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
