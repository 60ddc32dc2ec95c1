//! The pci_epf_user character device (`/dev/epf-user-<name>`): open, the ioctls of the ABI
//! in [`crate::uapi`], events, and mappings of BARs and windows.

use crate::uapi;
use epf_epc::SharedMemory;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ref, ioctl_with_ref};

/// The open device. One process holds it at a time (the kernel refuses a second opener).
#[derive(Debug)]
pub struct EpfDevice {
    file: File,
    path: PathBuf,
}

/// Where the device of configfs function `name` lives.
pub fn device_path(name: &str) -> PathBuf {
    Path::new("/dev").join(format!("epf-user-{name}"))
}

fn check(r: i32) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl EpfDevice {
    /// Opens the device at `path`.
    pub fn open(path: &Path) -> io::Result<EpfDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(EpfDevice {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn features(&self) -> io::Result<uapi::Features> {
        let mut f = uapi::Features::default();
        // SAFETY: the ioctl writes a `Features` into `f`, which lives across the call.
        check(unsafe { ioctl_with_mut_ref(&self.file, uapi::GET_FEATURES(), &mut f) })?;
        if f.abi_version != uapi::ABI_VERSION {
            return Err(io::Error::other(format!(
                "the kernel speaks pci-epf-user ABI {}, we speak {}",
                f.abi_version,
                uapi::ABI_VERSION
            )));
        }
        Ok(f)
    }

    pub fn set_header(&self, h: &uapi::Header) -> io::Result<()> {
        // SAFETY: the ioctl reads a `Header` from `h`.
        check(unsafe { ioctl_with_ref(&self.file, uapi::SET_HEADER(), h) })
    }

    /// Programs BAR `bar`; returns what the kernel set (host-visible size, mappable bytes).
    pub fn set_bar(&self, bar: u8, size: u64, flags: u32) -> io::Result<uapi::Bar> {
        let mut b = uapi::Bar {
            bar: u32::from(bar),
            flags,
            size,
            mmap_size: 0,
        };
        // SAFETY: the ioctl reads and writes the `Bar` in `b`.
        check(unsafe { ioctl_with_mut_ref(&self.file, uapi::SET_BAR(), &mut b) })?;
        Ok(b)
    }

    pub fn set_irqs(&self, i: &uapi::Irqs) -> io::Result<()> {
        // SAFETY: the ioctl reads an `Irqs` from `i`.
        check(unsafe { ioctl_with_ref(&self.file, uapi::SET_IRQS(), i) })
    }

    pub fn start(&self) -> io::Result<()> {
        // SAFETY: an ioctl without argument.
        check(unsafe { ioctl(&self.file, uapi::START()) })
    }

    pub fn raise_irq(&self, kind: u32, number: u32) -> io::Result<()> {
        let i = uapi::Irq { kind, number };
        // SAFETY: the ioctl reads an `Irq` from `i`.
        check(unsafe { ioctl_with_ref(&self.file, uapi::RAISE_IRQ(), &i) })
    }

    pub fn irq_state(&self) -> io::Result<uapi::IrqState> {
        let mut s = uapi::IrqState::default();
        // SAFETY: the ioctl writes an `IrqState` into `s`.
        check(unsafe { ioctl_with_mut_ref(&self.file, uapi::GET_IRQ_STATE(), &mut s) })?;
        Ok(s)
    }

    pub fn map_window(&self, pci_addr: u64, size: u64) -> io::Result<uapi::Window> {
        let mut w = uapi::Window {
            pci_addr,
            size,
            ..Default::default()
        };
        // SAFETY: the ioctl reads and writes the `Window` in `w`.
        check(unsafe { ioctl_with_mut_ref(&self.file, uapi::MAP_WINDOW(), &mut w) })?;
        Ok(w)
    }

    pub fn unmap_window(&self, id: u32) -> io::Result<()> {
        let w = uapi::Window {
            id,
            ..Default::default()
        };
        // SAFETY: the ioctl reads the `Window` in `w`.
        check(unsafe { ioctl_with_ref(&self.file, uapi::UNMAP_WINDOW(), &w) })
    }

    /// Copies `buf` to host address `pci_addr` (`to_host`) or fills it from there; returns
    /// whether a DMA engine moved the data.
    pub fn dma(&self, buf: &mut [u8], pci_addr: u64, to_host: bool) -> io::Result<bool> {
        let mut d = uapi::Dma {
            user: buf.as_mut_ptr() as u64,
            pci_addr,
            len: u32::try_from(buf.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            flags: if to_host {
                uapi::DMA_TO_HOST
            } else {
                uapi::DMA_FROM_HOST
            },
        };
        let flags = d.flags;
        loop {
            // SAFETY: the ioctl reads or writes `buf` (pointer and length in `d`, both live
            // and exclusively borrowed for the call) and writes `d.flags`.
            match check(unsafe { ioctl_with_mut_ref(&self.file, uapi::DMA(), &mut d) }) {
                // A transfer cut short by a signal is done again whole (older modules wait
                // interruptibly, and io_uring completions interrupt such waits).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => d.flags = flags,
                Err(e) => return Err(e),
                Ok(_) => return Ok(d.flags & uapi::DMA_USED_DMA != 0),
            }
        }
    }

    /// Blocks for the next event.
    pub fn next_event(&self) -> io::Result<uapi::Event> {
        let mut e = uapi::Event::default();
        let n = std::mem::size_of::<uapi::Event>();
        loop {
            // SAFETY: reads at most `n` bytes into `e`, a plain-data struct of that size.
            let r = unsafe {
                libc::read(
                    self.file.as_raw_fd(),
                    &mut e as *mut uapi::Event as *mut libc::c_void,
                    n,
                )
            };
            if r == n as isize {
                return Ok(e);
            }
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            return Err(io::Error::other(format!("short event read of {r} bytes")));
        }
    }

    /// Maps `len` bytes of the device at mmap offset `offset`.
    pub fn map(&self, offset: u64, len: usize) -> io::Result<SharedMemory> {
        let fd: OwnedFd = self.file.try_clone()?.into();
        SharedMemory::map(fd, offset, len, true)
    }
}
