//! Named shared-memory segments under `/dev/shm`.
//!
//! A segment is built under a temporary name (`<name>.<pid>.<n>.init`), gets its
//! header, and is then published under its real name with `link(2)`, which
//! fails if the name exists. So a file under a segment name always carries a
//! complete header naming its owner, and a creator that dies at any point
//! leaves nothing that [`Segment::reap_stale`] cannot recognise and remove.
//!
//! ```
//! use comm_shm::segment::Segment;
//!
//! let seg = Segment::create("comm-doc-segment-module", 4096)?;
//! seg.mark_ready();
//! let other = Segment::open("comm-doc-segment-module")?; // another process would do this
//! assert_eq!(other.payload_len(), seg.payload_len());
//! drop(other);
//! drop(seg); // the creator unlinks the file
//! assert!(Segment::open("comm-doc-segment-module").is_err());
//! # Ok::<(), comm_shm::ShmError>(())
//! ```

mod header;
mod reap;

pub use header::{SegmentHeader, LAYOUT_VERSION, MAGIC, PAYLOAD_OFFSET, READY};

use std::fs::{self, OpenOptions};
use std::io;
use std::mem::size_of;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use memmap2::MmapMut;

use crate::{liveness, name, ShmError};
use header::READY_OFFSET;

/// Directory that holds POSIX shared memory on Linux.
///
/// ```
/// use comm_shm::{segment::SHM_DIR, Segment};
/// let seg = Segment::create("comm-doc-shm-dir", 4096)?;
/// assert!(std::path::Path::new(SHM_DIR).join("comm-doc-shm-dir").exists());
/// # drop(seg);
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub const SHM_DIR: &str = "/dev/shm";

const PAGE: usize = 4096;

/// A named shared-memory segment mapped into this process.
///
/// The creator builds it with [`Segment::create`], initialises the payload and
/// calls [`Segment::mark_ready`]; other processes [`Segment::open`] it by name.
/// The creator unlinks the name when its `Segment` drops (mappings stay valid
/// until every process unmaps). Segments left by crashed creators are removed
/// by [`Segment::reap_stale`].
///
/// ```
/// use comm_shm::Segment;
/// let seg = Segment::create("comm-doc-segment", 4096)?;
/// assert!(seg.payload_len() >= 4096);
/// seg.mark_ready();
/// let other = Segment::open("comm-doc-segment")?;
/// assert_eq!(other.payload_len(), seg.payload_len());
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub struct Segment {
    name: String,
    path: PathBuf,
    // Keeps the mapping alive; all access goes through `base`.
    _map: MmapMut,
    base: NonNull<u8>,
    len: usize,
    owner: bool,
    unlinked: AtomicBool,
    // Payload ranges that structures (rings) occupy in this process, so that
    // two of them can never alias the same bytes through safe code.
    #[cfg_attr(loom, allow(dead_code))]
    reserved: Mutex<Vec<Range<usize>>>,
}

// SAFETY: `base` points into the mapping owned by `_map`, which lives as long as
// the segment and is itself Send + Sync. The segment hands out only raw
// pointers and the atomic ready word; the structures placed in the payload
// define their own cross-thread (and cross-process) protocols.
unsafe impl Send for Segment {}
// SAFETY: see the Send impl: shared access is through atomics or raw pointers only.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a segment with at least `payload_len` usable bytes, mode 0600.
    ///
    /// Fails with [`ShmError::AlreadyExists`] if the name is taken. The segment
    /// is not ready for [`Segment::open`] until [`Segment::mark_ready`].
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-create", 1 << 20)?;
    /// assert!(seg.is_owner());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn create(name: &str, payload_len: usize) -> Result<Segment, ShmError> {
        name::validate(name)?;
        let total = PAYLOAD_OFFSET
            .checked_add(payload_len)
            .and_then(|n| n.checked_next_multiple_of(PAGE))
            .ok_or(ShmError::Layout("segment size overflows"))?;
        let pid = std::process::id();
        let path = shm_path(name);
        let tmp = shm_path(&name::init_name(name, pid));
        let mut map = build(&tmp, total, pid)?;
        let Some(base) = NonNull::new(map.as_mut_ptr()) else {
            let _ = fs::remove_file(&tmp);
            return Err(ShmError::Layout("null mapping"));
        };
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Segment {
                name: name.to_owned(),
                path,
                _map: map,
                base,
                len: total,
                owner: true,
                unlinked: AtomicBool::new(false),
                reserved: Mutex::new(Vec::new()),
            }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ShmError::AlreadyExists {
                name: name.to_owned(),
            }),
            Err(e) => Err(ShmError::io("publish", &path, e)),
        }
    }

    /// Opens an existing, ready segment created by another process (or this one).
    ///
    /// Truncated files, other layout versions and segments whose creator has
    /// not called [`Segment::mark_ready`] are refused with a clear error.
    ///
    /// ```
    /// match comm_shm::Segment::open("comm-doc-open") {
    ///     Ok(seg) => println!("{} bytes", seg.payload_len()),
    ///     Err(comm_shm::ShmError::NotReady) => println!("try again shortly"),
    ///     Err(e) => println!("cannot open: {e}"),
    /// }
    /// ```
    pub fn open(name: &str) -> Result<Segment, ShmError> {
        name::validate(name)?;
        let path = shm_path(name);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ShmError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(ShmError::io("open", &path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| ShmError::io("stat", &path, e))?;
        check_trusted(&meta)?;
        if meta.len() < PAYLOAD_OFFSET as u64 {
            return Err(ShmError::Truncated {
                expected: PAYLOAD_OFFSET as u64,
                actual: meta.len(),
            });
        }
        // SAFETY: mapping a file is unsafe because another process may change or
        // truncate it. The file is a regular file of this user with no access for
        // others (checked above), so only this user's comm processes write it;
        // every access below is bounds-checked against the mapping's own length.
        let mut map =
            unsafe { MmapMut::map_mut(&file) }.map_err(|e| ShmError::io("mmap", &path, e))?;
        let len = map.len();
        if len < PAYLOAD_OFFSET {
            return Err(ShmError::Truncated {
                expected: PAYLOAD_OFFSET as u64,
                actual: len as u64,
            });
        }
        let base = NonNull::new(map.as_mut_ptr()).ok_or(ShmError::Layout("null mapping"))?;
        let seg = Segment {
            name: name.to_owned(),
            path,
            _map: map,
            base,
            len,
            owner: false,
            unlinked: AtomicBool::new(false),
            reserved: Mutex::new(Vec::new()),
        };
        // Acquire pairs with the creator's Release in `mark_ready`: everything it
        // wrote into the payload before is visible once READY is seen.
        if seg.ready_word().load(Ordering::Acquire) != READY {
            return Err(ShmError::NotReady);
        }
        SegmentHeader::decode(bytemuck::bytes_of(&seg.header()), len as u64)?;
        Ok(seg)
    }

    /// Publishes the payload: after this, [`Segment::open`] succeeds and sees
    /// everything written into the payload before the call.
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-ready", 64)?;
    /// assert!(!seg.is_ready());
    /// seg.mark_ready();
    /// assert!(seg.is_ready());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn mark_ready(&self) {
        self.ready_word().store(READY, Ordering::Release);
    }

    /// Whether the creator has called [`Segment::mark_ready`].
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-is-ready", 64)?;
    /// assert!(!seg.is_ready());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        self.ready_word().load(Ordering::Acquire) == READY
    }

    /// A copy of the header.
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-header", 64)?;
    /// assert_eq!(seg.header().owner_pid, std::process::id());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn header(&self) -> SegmentHeader {
        let mut header = SegmentHeader::zeroed_header();
        let bytes = bytemuck::bytes_of_mut(&mut header);
        let ready_end = READY_OFFSET + size_of::<u32>();
        // SAFETY: the header lies inside the mapping. Only the ready word
        // changes after creation, and it is read atomically below; the ranges
        // copied here are written once, before the segment was published.
        unsafe {
            let src = self.base.as_ptr();
            std::ptr::copy_nonoverlapping(src, bytes.as_mut_ptr(), READY_OFFSET);
            std::ptr::copy_nonoverlapping(
                src.add(ready_end),
                bytes.as_mut_ptr().add(ready_end),
                size_of::<SegmentHeader>() - ready_end,
            );
        }
        header.ready = self.ready_word().load(Ordering::Acquire);
        header
    }

    /// The segment's name (the file name under `/dev/shm`).
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-name", 64)?;
    /// assert_eq!(seg.name(), "comm-doc-name");
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's path, `/dev/shm/<name>`.
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-path", 64)?;
    /// assert!(seg.path().exists());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle created the segment (and so unlinks it on drop).
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-owner", 64)?;
    /// assert!(seg.is_owner());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Usable bytes after the header (at least what was asked for at creation).
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-len", 100)?;
    /// assert!(seg.payload_len() >= 100);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn payload_len(&self) -> usize {
        self.len - PAYLOAD_OFFSET
    }

    /// Start of the payload, aligned to 128 bytes. The memory is shared with
    /// other processes: whatever is placed there must define its own protocol.
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-ptr", 64)?;
    /// assert_eq!(seg.payload_ptr().as_ptr() as usize % 128, 0);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn payload_ptr(&self) -> NonNull<u8> {
        // SAFETY: `len >= PAYLOAD_OFFSET` (checked at create and open), so the
        // offset stays inside the mapping.
        unsafe { self.base.add(PAYLOAD_OFFSET) }
    }

    /// Removes the name from `/dev/shm`; existing mappings keep working and the
    /// memory is freed when the last process unmaps it. Idempotent.
    ///
    /// ```
    /// let seg = comm_shm::Segment::create("comm-doc-unlink", 64)?;
    /// seg.unlink()?;
    /// assert!(!seg.path().exists());
    /// seg.unlink()?; // a second call does nothing
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn unlink(&self) -> Result<(), ShmError> {
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ShmError::io("unlink", &self.path, e)),
        }
    }

    /// Removes every segment whose name starts with `prefix` and whose creator
    /// process is dead (or whose pid now belongs to another process), along with
    /// half-built ones of dead creators. Files that are not comm segments are
    /// left alone. Returns the names removed.
    ///
    /// ```
    /// let reaped = comm_shm::Segment::reap_stale("comm-")?;
    /// println!("removed {} stale segments", reaped.len());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn reap_stale(prefix: &str) -> Result<Vec<String>, ShmError> {
        reap::reap_stale(Path::new(SHM_DIR), prefix)
    }

    /// Records that `offset..offset + len` of the payload holds one structure
    /// in this process. A range that overlaps another is refused, except the
    /// very same range when `shared` (another handle to the same structure).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn reserve(&self, offset: usize, len: usize, shared: bool) -> Result<(), ShmError> {
        let range = offset..offset + len;
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        for r in reserved.iter() {
            if shared && *r == range {
                return Ok(());
            }
            if r.start < range.end && range.start < r.end {
                return Err(ShmError::Layout(
                    "region overlaps another ring in this segment",
                ));
            }
        }
        reserved.push(range);
        Ok(())
    }

    fn ready_word(&self) -> &AtomicU32 {
        // SAFETY: the ready word is 4-byte aligned (mapping is page aligned,
        // offset 24), inside the mapping, and only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(READY_OFFSET).cast()) }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owner {
            let _ = self.unlink();
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("owner", &self.owner)
            .field("ready", &self.is_ready())
            .finish()
    }
}

fn shm_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(name)
}

/// Creates the temporary file, sizes and maps it, and writes a not-ready header.
/// Removes the temporary file again if building fails after creating it.
fn build(tmp: &Path, total: usize, pid: u32) -> Result<MmapMut, ShmError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| ShmError::io("create", tmp, e))?;
    let built = fill(&file, tmp, total, pid);
    if built.is_err() {
        let _ = fs::remove_file(tmp);
    }
    built
}

fn fill(file: &fs::File, tmp: &Path, total: usize, pid: u32) -> Result<MmapMut, ShmError> {
    // The umask can only remove bits, but make the mode exact regardless.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| ShmError::io("chmod", tmp, e))?;
    file.set_len(total as u64)
        .map_err(|e| ShmError::io("truncate", tmp, e))?;
    // SAFETY: the file was just created with O_EXCL by this process and is not
    // yet visible under the segment name, so nobody else resizes it.
    let mut map = unsafe { MmapMut::map_mut(file) }.map_err(|e| ShmError::io("mmap", tmp, e))?;
    let ticks = liveness::start_ticks(pid).unwrap_or(0);
    let header = SegmentHeader::new(total as u64, pid, ticks, liveness::pid_namespace());
    map[..size_of::<SegmentHeader>()].copy_from_slice(bytemuck::bytes_of(&header));
    Ok(map)
}

/// Refuses files that another user could control: anything but a regular file
/// of this user with no permissions for group or others.
fn check_trusted(meta: &fs::Metadata) -> Result<(), ShmError> {
    if !meta.file_type().is_file() {
        return Err(ShmError::Untrusted("not a regular file"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(ShmError::Untrusted("owned by another user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(ShmError::Untrusted("accessible to group or others"));
    }
    Ok(())
}
