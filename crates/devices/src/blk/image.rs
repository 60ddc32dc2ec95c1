//! The disk image behind a virtio-blk device: a raw image in a regular file or a block
//! device, opened and checked once at start.
//!
//! Everything that can be wrong with an image is found here, before the device exists, and
//! reported as one line: a missing or unreadable path, something that is neither a regular
//! file nor a block device, a size that is not a multiple of 512, write access asked for a
//! read-only file, an image another `virtio-epf` already serves, a file system without
//! O_DIRECT when direct I/O was asked for. Nothing is written to the image while checking.
//!
//! The image also knows what the host side can tell about its geometry (logical and physical
//! block size, I/O hints, direct-I/O alignment) and how to discard and zero ranges of it
//! (`fallocate(2)`, which works on both regular files and block devices).

use super::error::ImageError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes per virtio-blk sector (fixed by the spec, whatever the block size).
pub const SECTOR_SIZE: u64 = 512;

/// How to open an image.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    pub path: PathBuf,
    pub read_only: bool,
    /// Use O_DIRECT for the I/O that is aligned for it (the host page cache is bypassed).
    pub direct: bool,
}

/// What kind of object the image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    File,
    BlockDevice,
}

/// What `fallocate(2)` should do to a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// Deallocate (reads afterwards return zeroes for files, unspecified for devices).
    Discard,
    /// Zero the range, keeping it allocated.
    Zero,
    /// Zero the range, deallocating it where possible.
    ZeroUnmap,
}

/// An open, validated image.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    /// Buffered descriptor; every operation may use it.
    file: File,
    /// O_DIRECT descriptor (with `--direct`), for I/O aligned to `dio_align`.
    direct: Option<File>,
    kind: ImageKind,
    size: u64,
    read_only: bool,
    logical_block: u32,
    physical_block: u32,
    min_io: u32,
    opt_io: u32,
    dio_align: u32,
    discard: bool,
}

/// Opens and checks an image; the error is one line naming the path.
pub fn open(opts: &ImageOptions) -> Result<Image, ImageError> {
    let path = &opts.path;
    let p = || path.clone();
    let meta = std::fs::metadata(path).map_err(|source| ImageError::Open { path: p(), source })?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        ImageKind::File
    } else if ft.is_block_device() {
        ImageKind::BlockDevice
    } else {
        return Err(ImageError::Kind { path: p() });
    };
    if !opts.read_only && kind == ImageKind::File && meta.permissions().mode() & 0o222 == 0 {
        // root could open it for writing anyway; a write-protected file is a statement.
        return Err(ImageError::WriteProtected {
            path: p(),
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    let file =
        open_fd(path, opts.read_only, false).map_err(|source| match source.raw_os_error() {
            Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY) if !opts.read_only => {
                ImageError::NotWritable { path: p(), source }
            }
            _ => ImageError::Open { path: p(), source },
        })?;
    lock(&file, opts.read_only).map_err(|source| {
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            ImageError::Locked { path: p() }
        } else {
            ImageError::Lock { path: p(), source }
        }
    })?;
    let size = match kind {
        ImageKind::File => meta.len(),
        ImageKind::BlockDevice => {
            seek_end(&file).map_err(|source| ImageError::Size { path: p(), source })?
        }
    };
    if size % SECTOR_SIZE != 0 {
        return Err(ImageError::Unaligned { path: p(), size });
    }
    let mut img = Image {
        path: path.clone(),
        file,
        direct: None,
        kind,
        size,
        read_only: opts.read_only,
        logical_block: SECTOR_SIZE as u32,
        physical_block: SECTOR_SIZE as u32,
        min_io: 0,
        opt_io: 0,
        dio_align: 4096,
        discard: true,
    };
    img.probe_geometry(&meta);
    if opts.direct {
        let d = open_fd(path, opts.read_only, true)
            .map_err(|source| ImageError::Direct { path: p(), source })?;
        img.dio_align = dio_alignment(&d).unwrap_or(img.dio_align).max(512);
        img.direct = Some(d);
    }
    if img.logical_block as u64 > 0 && size % u64::from(img.logical_block) != 0 {
        return Err(ImageError::BlockUnaligned {
            path: p(),
            size,
            block: img.logical_block,
        });
    }
    Ok(img)
}

fn open_fd(path: &Path, read_only: bool, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(!read_only);
    let mut flags = libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    o.custom_flags(flags).open(path)
}

/// Advisory whole-file lock: exclusive for a writable image, shared for a read-only one, so
/// two endpoints never write the same image. Released when the process dies (kill -9
/// included).
fn lock(f: &File, shared: bool) -> io::Result<()> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX } | libc::LOCK_NB;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn seek_end(f: &File) -> io::Result<u64> {
    // SAFETY: lseek(2) on a descriptor we own; the file position is not used elsewhere (all
    // I/O is positional).
    let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// An `int`/`unsigned int` block-device ioctl, or `None` if it fails.
fn ioctl_u32(fd: RawFd, req: libc::Ioctl) -> Option<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: the BLK*GET ioctls used here write one int/unsigned int to the pointer, which
    // points to a live local of that size.
    let r = unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_uint) };
    (r == 0).then_some(v)
}

/// The direct-I/O offset alignment statx reports (Linux 6.1+), if any.
fn dio_alignment(f: &File) -> Option<u32> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: statx(2) with AT_EMPTY_PATH on our descriptor writes into `stx`, which is a
    // live, properly sized statx; `empty` is a valid NUL-terminated string.
    let r = unsafe {
        libc::statx(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if r != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let a = stx.stx_dio_offset_align.max(stx.stx_dio_mem_align);
    (a > 0 && a.is_power_of_two()).then_some(a)
}

impl Image {
    fn probe_geometry(&mut self, meta: &std::fs::Metadata) {
        match self.kind {
            ImageKind::File => {
                // The file system's block is the unit in which it allocates and discards.
                let blk = meta.blksize();
                if blk.is_power_of_two() && (512..=65536).contains(&blk) {
                    self.physical_block = blk as u32;
                }
                self.min_io = self.physical_block;
            }
            ImageKind::BlockDevice => {
                let fd = self.file.as_raw_fd();
                if let Some(v) = ioctl_u32(fd, libc::BLKSSZGET).filter(|v| valid_block(*v)) {
                    self.logical_block = v;
                    self.dio_align = v;
                }
                self.physical_block = ioctl_u32(fd, libc::BLKPBSZGET)
                    .filter(|v| valid_block(*v) && *v >= self.logical_block)
                    .unwrap_or(self.logical_block);
                self.min_io = ioctl_u32(fd, libc::BLKIOMIN).unwrap_or(0);
                self.opt_io = ioctl_u32(fd, libc::BLKIOOPT).unwrap_or(0);
                self.discard = block_device_discards(meta.rdev());
            }
        }
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes (a multiple of 512).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Regular file or block device.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Whether the image was opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Logical block size (512 for files, the device's for block devices).
    pub fn logical_block(&self) -> u32 {
        self.logical_block
    }

    /// Physical block size: the file system block for files, the device's for devices.
    pub fn physical_block(&self) -> u32 {
        self.physical_block
    }

    /// Minimum and optimal I/O size in bytes (0 when unknown).
    pub fn io_hints(&self) -> (u32, u32) {
        (self.min_io, self.opt_io)
    }

    /// Whether discarding is worth offering.
    pub fn can_discard(&self) -> bool {
        self.discard && !self.read_only
    }

    /// Whether O_DIRECT is in use.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Alignment (offset, length and memory) O_DIRECT I/O needs.
    pub fn dio_align(&self) -> u32 {
        self.dio_align
    }

    /// The descriptor to use for `len` bytes at `offset`: the O_DIRECT one when it is open and
    /// the access is aligned for it, else the buffered one. Buffers handed to it are always
    /// aligned to 4096 bytes.
    pub fn fd_for(&self, offset: u64, len: u64) -> RawFd {
        match &self.direct {
            Some(d) => {
                let a = u64::from(self.dio_align);
                if a <= 4096 && offset % a == 0 && len % a == 0 {
                    d.as_raw_fd()
                } else {
                    self.file.as_raw_fd()
                }
            }
            None => self.file.as_raw_fd(),
        }
    }

    /// The buffered descriptor (flush, fallocate).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The `fallocate(2)` mode for `op` on this kind of image.
    pub fn fallocate_mode(&self, op: RangeOp) -> libc::c_int {
        const NO_HIDE_STALE: libc::c_int = 0x04;
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        match (op, self.kind) {
            (RangeOp::Discard, ImageKind::File) | (RangeOp::ZeroUnmap, _) => {
                libc::FALLOC_FL_PUNCH_HOLE | keep
            }
            // On a block device, PUNCH_HOLE|NO_HIDE_STALE is a real discard (BLKDISCARD).
            (RangeOp::Discard, ImageKind::BlockDevice) => {
                libc::FALLOC_FL_PUNCH_HOLE | keep | NO_HIDE_STALE
            }
            (RangeOp::Zero, _) => libc::FALLOC_FL_ZERO_RANGE | keep,
        }
    }
}

fn valid_block(v: u32) -> bool {
    v.is_power_of_two() && (512..=65536).contains(&v)
}

/// Whether sysfs says the block device `rdev` supports discard (true when unknown).
fn block_device_discards(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let p = format!("/sys/dev/block/{major}:{minor}/queue/discard_max_bytes");
    match std::fs::read_to_string(p) {
        Ok(s) => s.trim().parse::<u64>().map_or(true, |v| v > 0),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("epf-blk-image-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    fn opts(p: &Path, ro: bool) -> ImageOptions {
        ImageOptions {
            path: p.to_path_buf(),
            read_only: ro,
            direct: false,
        }
    }

    #[test]
    fn opens_a_file_and_reports_its_size() {
        let p = tmp("ok");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let img = open(&opts(&p, false)).unwrap();
        assert_eq!(img.size(), 8192);
        assert_eq!(img.sectors(), 16);
        assert_eq!(img.kind(), ImageKind::File);
        assert!(img.physical_block() >= 512);
        drop(img);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn rejects_bad_images_with_one_line_and_leaves_them_alone() {
        let missing = tmp("missing");
        let e = open(&opts(&missing, false)).unwrap_err().to_string();
        assert!(
            e.contains("cannot open image") && e.contains("No such file"),
            "{e}"
        );
        assert!(!missing.exists());

        let odd = tmp("odd");
        std::fs::write(&odd, vec![1u8; 1000]).unwrap();
        let e = open(&opts(&odd, false)).unwrap_err().to_string();
        assert!(e.contains("not a multiple of 512"), "{e}");
        assert_eq!(std::fs::read(&odd).unwrap(), vec![1u8; 1000]);
        std::fs::remove_file(&odd).unwrap();

        let ro = tmp("ro");
        std::fs::write(&ro, vec![2u8; 1024]).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = open(&opts(&ro, false)).unwrap_err();
        assert!(matches!(e, ImageError::WriteProtected { .. }), "{e}");
        assert!(e.to_string().contains("is read-only (mode 444)"), "{e}");
        let img = open(&opts(&ro, true)).unwrap();
        assert!(img.read_only());
        drop(img);
        std::fs::remove_file(&ro).unwrap();

        let e = open(&opts(Path::new("/proc/self"), true))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("neither a regular file nor a block device"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_writable_image_is_locked_against_a_second_user() {
        let p = tmp("lock");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let a = open(&opts(&p, false)).unwrap();
        let e = open(&opts(&p, false)).unwrap_err();
        assert!(matches!(e, ImageError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("in use"), "{e}");
        assert!(open(&opts(&p, true)).is_err());
        drop(a);
        let b = open(&opts(&p, true)).unwrap();
        let c = open(&opts(&p, true)).unwrap();
        drop((b, c));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn direct_descriptor_is_used_only_for_aligned_io() {
        let p = tmp("direct");
        std::fs::write(&p, vec![0u8; 65536]).unwrap();
        let mut o = opts(&p, false);
        o.direct = true;
        let img = open(&o).unwrap();
        assert!(img.is_direct());
        let a = u64::from(img.dio_align());
        assert_ne!(img.fd_for(0, a), img.fd());
        assert_eq!(
            img.fd_for(512, 512.max(a)),
            if a <= 512 { img.fd_for(0, a) } else { img.fd() }
        );
        assert_eq!(img.fd_for(0, 100), img.fd());
        drop(img);
        std::fs::remove_file(&p).unwrap();
    }
}
