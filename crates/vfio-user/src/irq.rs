//! Interrupt state set up by VFIO_USER_DEVICE_SET_IRQS: the eventfds the client gave us per
//! IRQ index and vector, and the INTx level/mask emulation.
//!
//! The client (QEMU) emulates the MSI-X table and PBA itself and hands us one eventfd per
//! vector it enabled; raising vector `v` is writing to that eventfd. INTx follows the VFIO
//! model: it is level triggered and automasked — signalling masks it, and the client unmasks
//! it (ACTION_UNMASK) once the guest has serviced it; if the level is still high at that
//! point it fires again.

use crate::protocol::{ERR_IRQ, INTX_IRQ, MSIX_IRQ, MSI_IRQ, REQ_IRQ};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use vfio_bindings::bindings::vfio as vb;

/// What a SET_IRQS command asks for, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Mask,
    Unmask,
    Trigger,
}

/// Why a SET_IRQS command or an interrupt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IrqError {
    /// Bad index, range, flags or fd count (EINVAL).
    Invalid,
}

/// Writes 1 to an eventfd without ever blocking on it. The client shares the file
/// description with us and may clear O_NONBLOCK on it or drive the counter to its maximum, so
/// the flag is put back before the write and a full counter (the interrupt is pending anyway)
/// is not written to. Errors are logged: the client may have handed us anything.
pub(crate) fn signal(fd: &OwnedFd) -> bool {
    set_nonblocking(fd);
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one live pollfd, without waiting.
    if unsafe { libc::poll(&mut pfd, 1, 0) } == 0 {
        return true;
    }
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
    let r = unsafe {
        libc::write(
            fd.as_raw_fd(),
            &one as *const u64 as *const libc::c_void,
            std::mem::size_of::<u64>(),
        )
    };
    if r != 8 {
        let e = std::io::Error::last_os_error();
        // EAGAIN: the counter is saturated, i.e. the interrupt is pending anyway.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            log::warn!("vfio-user: cannot signal interrupt eventfd: {e}");
            return false;
        }
    }
    true
}

/// Makes `fd` non-blocking so a hostile descriptor (a full pipe) cannot stall `raise_irq`.
fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 && fl & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// Whether `fd` is an eventfd (what SET_IRQS must hand us; a pipe or socket could block or
/// fill up).
fn is_eventfd(fd: &OwnedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|t| t.as_os_str() == "anon_inode:[eventfd]")
}

/// The interrupt configuration of the current client.
#[derive(Debug)]
pub(crate) struct IrqState {
    intx_pin: bool,
    intx: Option<Arc<OwnedFd>>,
    intx_level: bool,
    intx_masked: bool,
    msix: Vec<Option<Arc<OwnedFd>>>,
    msi: Vec<Option<Arc<OwnedFd>>>,
    err: Option<Arc<OwnedFd>>,
    req: Option<Arc<OwnedFd>>,
}

impl IrqState {
    /// State for a function with an INTx pin (or not), `msix_vectors` MSI-X vectors and
    /// `msi_vectors` MSI vectors.
    pub fn new(intx_pin: bool, msix_vectors: u16, msi_vectors: u16) -> Self {
        IrqState {
            intx_pin,
            intx: None,
            intx_level: false,
            intx_masked: false,
            msix: (0..msix_vectors).map(|_| None).collect(),
            msi: (0..msi_vectors).map(|_| None).collect(),
            err: None,
            req: None,
        }
    }

    /// Number of interrupts of IRQ index `index` (what GET_IRQ_INFO reports).
    pub fn count(&self, index: u32) -> u32 {
        match index {
            INTX_IRQ => self.intx_pin as u32,
            MSI_IRQ => self.msi.len() as u32,
            MSIX_IRQ => self.msix.len() as u32,
            ERR_IRQ | REQ_IRQ => 1,
            _ => 0,
        }
    }

    /// The VFIO_IRQ_INFO flags of index `index`. No index reports NORESIZE: QEMU then adds
    /// MSI-X vectors one at a time instead of disabling and re-enabling all of them (which
    /// could lose an interrupt raised in between).
    pub fn info_flags(&self, index: u32) -> u32 {
        match index {
            INTX_IRQ => {
                vb::VFIO_IRQ_INFO_EVENTFD
                    | vb::VFIO_IRQ_INFO_MASKABLE
                    | vb::VFIO_IRQ_INFO_AUTOMASKED
            }
            _ => vb::VFIO_IRQ_INFO_EVENTFD,
        }
    }

    fn slot(&mut self, index: u32, i: usize) -> Option<&mut Option<Arc<OwnedFd>>> {
        match index {
            INTX_IRQ if i == 0 => Some(&mut self.intx),
            MSIX_IRQ => self.msix.get_mut(i),
            MSI_IRQ => self.msi.get_mut(i),
            ERR_IRQ if i == 0 => Some(&mut self.err),
            REQ_IRQ if i == 0 => Some(&mut self.req),
            _ => None,
        }
    }

    /// Checks that `[start, start+count)` is a valid range of `index`.
    fn check_range(&self, index: u32, start: u32, count: u32) -> Result<(), IrqError> {
        let end = start.checked_add(count).ok_or(IrqError::Invalid)?;
        if index >= crate::protocol::NUM_IRQS || end > self.count(index) {
            return Err(IrqError::Invalid);
        }
        Ok(())
    }

    /// ACTION_TRIGGER with DATA_EVENTFD: installs `fds` for `[start, start+count)`, or removes
    /// the eventfds of that range if `fds` is empty (QEMU sends no descriptor for entries of
    /// -1). Installed descriptors are made non-blocking.
    pub fn set_eventfds(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), IrqError> {
        self.check_range(index, start, count)?;
        if !fds.is_empty() && fds.len() != count as usize {
            return Err(IrqError::Invalid);
        }
        if !fds.iter().all(is_eventfd) {
            log::warn!("vfio-user: SET_IRQS with a descriptor that is not an eventfd refused");
            return Err(IrqError::Invalid);
        }
        if fds.is_empty() {
            for i in start..start + count {
                if let Some(s) = self.slot(index, i as usize) {
                    *s = None;
                }
            }
        } else {
            for (i, fd) in (start..start + count).zip(fds) {
                set_nonblocking(&fd);
                if let Some(s) = self.slot(index, i as usize) {
                    *s = Some(Arc::new(fd));
                }
            }
        }
        if index == INTX_IRQ {
            self.intx_masked = false;
            // A level that is still high is delivered on the new eventfd.
            self.intx_deliver();
        }
        Ok(())
    }

    /// ACTION_TRIGGER with DATA_NONE and count 0: disables every interrupt of `index`.
    pub fn disable_index(&mut self, index: u32) -> Result<(), IrqError> {
        if index >= crate::protocol::NUM_IRQS {
            return Err(IrqError::Invalid);
        }
        for i in 0..self.count(index).max(1) {
            if let Some(s) = self.slot(index, i as usize) {
                *s = None;
            }
        }
        if index == INTX_IRQ {
            self.intx_masked = false;
        }
        Ok(())
    }

    /// DATA_NONE / DATA_BOOL actions on `[start, start+count)`; `which` selects the entries
    /// (all for DATA_NONE). Returns how many interrupts were signalled.
    pub fn act(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        action: Action,
        which: &[bool],
    ) -> Result<u32, IrqError> {
        self.check_range(index, start, count)?;
        let mut fired = 0;
        for (n, i) in (start..start + count).enumerate() {
            if !which.get(n).copied().unwrap_or(true) {
                continue;
            }
            match (index, action) {
                (INTX_IRQ, Action::Mask) => self.intx_masked = true,
                (INTX_IRQ, Action::Unmask) => {
                    self.intx_masked = false;
                    if self.intx_deliver() {
                        fired += 1;
                    }
                }
                (INTX_IRQ, Action::Trigger) => {
                    if let Some(fd) = &self.intx {
                        fired += signal(fd) as u32;
                    }
                }
                // MSI-X masking is emulated by the client; ERR/REQ have nothing to mask.
                (_, Action::Mask | Action::Unmask) => {}
                (_, Action::Trigger) => {
                    if let Some(Some(fd)) = self.slot(index, i as usize) {
                        fired += signal(fd) as u32;
                    }
                }
            }
        }
        Ok(fired)
    }

    /// Signals INTx if its level is high, it is not masked and has an eventfd; automasks.
    fn intx_deliver(&mut self) -> bool {
        if self.intx_level && !self.intx_masked {
            if let Some(fd) = &self.intx {
                self.intx_masked = true;
                return signal(fd);
            }
        }
        false
    }

    /// Sets the INTx level. Returns `None` if INTx has no eventfd, else whether it fired now.
    pub fn set_intx(&mut self, level: bool) -> Option<bool> {
        self.intx_level = level;
        self.intx.as_ref()?;
        Some(level && self.intx_deliver())
    }

    /// The eventfd of MSI-X vector `v`, to signal after the state's lock is released.
    pub fn msix_fd(&self, v: u16) -> Option<Arc<OwnedFd>> {
        self.msix.get(v as usize)?.clone()
    }

    /// The eventfd of MSI vector `v`.
    pub fn msi_fd(&self, v: u16) -> Option<Arc<OwnedFd>> {
        self.msi.get(v as usize)?.clone()
    }

    /// Signals MSI-X vector `v`: `None` if it has no eventfd.
    #[cfg(test)]
    pub fn raise_msix(&self, v: u16) -> Option<bool> {
        self.msix_fd(v).map(|fd| signal(&fd))
    }

    /// Whether any MSI-X vector has an eventfd.
    pub fn msix_enabled(&self) -> bool {
        self.msix.iter().any(Option::is_some)
    }

    /// How many MSI vectors the host enabled: the vectors up to the last one with an eventfd
    /// (the host enables a power of two of them at once).
    pub fn msi_enabled(&self) -> u16 {
        self.msi
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i as u16 + 1)
    }

    /// Forgets every eventfd and the INTx state (client gone or function reset).
    pub fn clear(&mut self) {
        self.intx = None;
        self.intx_level = false;
        self.intx_masked = false;
        self.msix.iter_mut().for_each(|s| *s = None);
        self.msi.iter_mut().for_each(|s| *s = None);
        self.err = None;
        self.req = None;
    }

    /// Resets the INTx level and mask (function reset; the eventfds stay configured).
    pub fn reset_intx(&mut self) {
        self.intx_level = false;
        self.intx_masked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn eventfd() -> (OwnedFd, OwnedFd) {
        // SAFETY: eventfd creates a fresh descriptor; dup duplicates it; both are owned here.
        unsafe {
            let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            assert!(fd >= 0);
            let dup = libc::dup(fd);
            assert!(dup >= 0);
            (OwnedFd::from_raw_fd(fd), OwnedFd::from_raw_fd(dup))
        }
    }

    fn count(fd: &OwnedFd) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from a descriptor we own.
        let r = unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
        if r == 8 {
            v
        } else {
            0
        }
    }

    #[test]
    fn msix_vectors_follow_their_eventfds() {
        let mut s = IrqState::new(false, 4, 0);
        assert_eq!(s.count(MSIX_IRQ), 4);
        assert!(!s.msix_enabled());
        let (a, a_reader) = eventfd();
        s.set_eventfds(MSIX_IRQ, 2, 1, vec![a]).unwrap();
        assert!(s.msix_enabled());
        assert_eq!(s.raise_msix(2), Some(true));
        assert_eq!(s.raise_msix(1), None);
        assert_eq!(s.raise_msix(4), None);
        assert_eq!(count(&a_reader), 1);
        // Out of range and fd/count mismatch.
        let (b, _) = eventfd();
        assert_eq!(
            s.set_eventfds(MSIX_IRQ, 4, 1, vec![b]),
            Err(IrqError::Invalid)
        );
        let (c, _) = eventfd();
        assert_eq!(
            s.set_eventfds(MSIX_IRQ, 0, 2, vec![c]),
            Err(IrqError::Invalid)
        );
        // Trigger from the client side, then removal without fds.
        assert_eq!(s.act(MSIX_IRQ, 0, 4, Action::Trigger, &[]), Ok(1));
        assert_eq!(count(&a_reader), 1);
        s.set_eventfds(MSIX_IRQ, 2, 1, vec![]).unwrap();
        assert!(!s.msix_enabled());
    }

    #[test]
    fn intx_is_automasked_level() {
        let mut s = IrqState::new(true, 0, 0);
        assert_eq!(s.set_intx(true), None);
        let (fd, reader) = eventfd();
        // The level is already high: installing the eventfd delivers it.
        s.set_eventfds(INTX_IRQ, 0, 1, vec![fd]).unwrap();
        assert_eq!(count(&reader), 1);
        // Masked until unmasked; the unmask fires again while the level is high.
        assert_eq!(s.set_intx(true), Some(false));
        assert_eq!(s.act(INTX_IRQ, 0, 1, Action::Unmask, &[]), Ok(1));
        assert_eq!(count(&reader), 1);
        s.set_intx(false);
        assert_eq!(s.act(INTX_IRQ, 0, 1, Action::Unmask, &[]), Ok(0));
        assert_eq!(s.set_intx(true), Some(true));
        s.disable_index(INTX_IRQ).unwrap();
        assert_eq!(s.set_intx(true), None);
    }
}
