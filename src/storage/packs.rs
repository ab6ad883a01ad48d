//! The default blob store: content-addressed PDFs appended to pack files.
//!
//! One file per PDF costs an inode allocation, a rename and an fsync for every letter; sealing
//! small letters at a thousand a second, that was about 40 % of the service's CPU on ext4
//! (README, "Performance"). Here each process appends records to pack files of its own,
//! `packs/<instance>-<n>.pack`, and concurrent writers share their flushes: `put` returns once an
//! `fdatasync` that began after its record was written has completed. A blob is therefore
//! durable before the database row that names it is committed, as before, for a fraction of the
//! flushes.
//!
//! Record layout: `SGB1` ‖ SHA-256 of the bytes (32) ‖ length (u64, little-endian) ‖ bytes.
//!
//! - Reads check the record header and re-hash the bytes; a mismatch is an error, never
//!   silently wrong content.
//! - The location of every blob is kept in memory (about 70 bytes a blob) and rebuilt at start by
//!   reading the record headers of every pack.
//! - Several instances may share the directory (servers on one PostgreSQL with shared storage):
//!   none appends to another's pack, and a blob that another instance wrote is found by reading
//!   what was appended since the last look, when a lookup misses.
//! - A crash can leave an incomplete last record in a pack. It is never indexed, and since a
//!   process never reopens a pack for writing, nothing is appended after it.
//! - Blobs written by earlier versions of Segel, one file each under `<dir>/ab/abcd…`, are still
//!   read.

use super::blobs::{BlobStore, FsBlobStore};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

const MAGIC: &[u8; 4] = b"SGB1";
const HEADER_LEN: u64 = 4 + 32 + 8;
/// A pack is closed and a new one started once it would grow past this size.
const DEFAULT_PACK_LIMIT: u64 = 256 << 20;

type Sha = [u8; 32];

#[derive(Clone, Copy, Debug)]
struct Location {
    pack: usize,
    /// Offset of the record header.
    offset: u64,
    len: u64,
}

struct Pack {
    path: PathBuf,
    file: Arc<File>,
    /// End of the last complete record read from this pack (foreign packs only).
    scanned: u64,
    /// Written by this process: indexed as it is written, never scanned.
    own: bool,
}

#[derive(Default)]
struct Index {
    blobs: HashMap<Sha, Location>,
    packs: Vec<Pack>,
}

/// The pack this process appends to.
struct Active {
    pack: usize,
    file: File,
    /// Bytes written (every record below this offset is complete).
    written: AtomicU64,
    /// Bytes known to be on disk.
    durable: Mutex<u64>,
    /// A flush failed: what was written since the last good flush may be lost (Linux can drop
    /// the dirty pages and report success on the next flush), so nothing more goes into this
    /// pack and its unflushed records are forgotten.
    failed: AtomicBool,
}

impl Active {
    /// Return once everything up to `end` is on disk. Whoever takes the lock first flushes all
    /// that is written at that moment; writers that finished before then find their bytes
    /// already durable and do not flush again.
    fn sync_to(&self, end: u64) -> io::Result<()> {
        let mut durable = lock(&self.durable);
        if *durable >= end {
            return Ok(());
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("an earlier flush of this pack failed"));
        }
        let target = self.written.load(Ordering::Acquire);
        if let Err(e) = self.file.sync_data() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        *durable = target;
        Ok(())
    }

    fn durable(&self) -> u64 {
        *lock(&self.durable)
    }
}

struct Writer {
    active: Option<Arc<Active>>,
    next_seq: u32,
}

/// Content-addressed blobs in append-only pack files under `dir/packs`.
pub struct PackBlobStore {
    dir: PathBuf,
    instance: String,
    pack_limit: u64,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    legacy: FsBlobStore,
}

/// A poisoned lock only means another thread panicked while holding it; the data it guards is
/// updated in single assignments that leave it consistent, so carry on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_sha(s: &str) -> io::Result<Sha> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256");
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn sha256(data: &[u8]) -> Sha {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn random_instance() -> io::Result<String> {
    let mut b = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| io::Error::other("no system randomness"))?;
    Ok(hex(&b))
}

/// Read the complete records of `file` from `from` on, calling `found` for each; returns the
/// end of the last complete record. Stops at a record that is not complete yet (or never will
/// be, after a crash) and at bytes that are not a record header.
fn scan(
    file: &File,
    path: &Path,
    from: u64,
    mut found: impl FnMut(Sha, u64, u64),
) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut at = from;
    let mut header = [0u8; HEADER_LEN as usize];
    while at + HEADER_LEN <= size {
        file.read_exact_at(&mut header, at)?;
        if &header[..4] != MAGIC {
            tracing::warn!(pack = %path.display(), offset = at, "not a blob record; the rest of this pack is ignored");
            break;
        }
        // Fixed ranges of the 44-byte header: the conversions cannot fail.
        let len = u64::from_le_bytes(header[36..44].try_into().expect("8 bytes"));
        let Some(end) = (at + HEADER_LEN).checked_add(len) else {
            break;
        };
        if end > size {
            break;
        }
        let sha: Sha = header[4..36].try_into().expect("32 bytes");
        found(sha, at, len);
        at = end;
    }
    Ok(at)
}

impl PackBlobStore {
    /// Open the store in `dir` (created if missing), indexing every pack already there.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        Self::with_pack_limit(dir, DEFAULT_PACK_LIMIT)
    }

    /// As [`open`](Self::open), starting a new pack once one would exceed `pack_limit` bytes.
    pub fn with_pack_limit(dir: impl Into<PathBuf>, pack_limit: u64) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("packs"))?;
        let store = PackBlobStore {
            legacy: FsBlobStore { dir: dir.clone() },
            dir,
            instance: random_instance()?,
            pack_limit: pack_limit.max(1),
            index: RwLock::new(Index::default()),
            writer: Mutex::new(Writer {
                active: None,
                next_seq: 0,
            }),
        };
        store.refresh()?;
        Ok(store)
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }

    fn index_read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Index what other processes appended since the last look: new packs, and new records in
    /// packs already known.
    fn refresh(&self) -> io::Result<()> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(self.packs_dir())? {
            let path = entry?.path();
            let own = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}-", self.instance)));
            // This process's own packs are indexed as they are written (and one being created
            // right now must not be taken for another process's).
            if path.extension().is_some_and(|e| e == "pack") && !own {
                paths.push(path);
            }
        }
        paths.sort();
        let mut index = self.index_write();
        for path in paths {
            if !index.packs.iter().any(|p| p.path == path) {
                let file = Arc::new(File::open(&path)?);
                index.packs.push(Pack {
                    path,
                    file,
                    scanned: 0,
                    own: false,
                });
            }
        }
        let Index { blobs, packs } = &mut *index;
        for (n, pack) in packs.iter_mut().enumerate().filter(|(_, p)| !p.own) {
            pack.scanned = scan(&pack.file, &pack.path, pack.scanned, |sha, offset, len| {
                blobs.entry(sha).or_insert(Location {
                    pack: n,
                    offset,
                    len,
                });
            })?;
        }
        Ok(())
    }

    /// Start a new pack of this process's own: flush the current one completely, create the
    /// file, and make its directory entry durable.
    fn rotate(&self, w: &mut Writer) -> io::Result<Arc<Active>> {
        if let Some(old) = &w.active
            && !old.failed.load(Ordering::Acquire)
        {
            old.sync_to(old.written.load(Ordering::Acquire))?;
        }
        let path = self
            .packs_dir()
            .join(format!("{}-{:06}.pack", self.instance, w.next_seq));
        w.next_seq += 1;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        File::open(self.packs_dir())?.sync_all()?;
        let reader = Arc::new(File::open(&path)?);
        let pack = {
            let mut index = self.index_write();
            index.packs.push(Pack {
                path,
                file: reader,
                scanned: 0,
                own: true,
            });
            index.packs.len() - 1
        };
        let active = Arc::new(Active {
            pack,
            file,
            written: AtomicU64::new(0),
            durable: Mutex::new(0),
            failed: AtomicBool::new(false),
        });
        w.active = Some(active.clone());
        Ok(active)
    }

    /// Make sure the record at `loc` is on disk (it may be one this process wrote a moment ago
    /// for a concurrent `put` of the same bytes).
    fn ensure_durable(&self, loc: Location) -> io::Result<()> {
        let active = lock(&self.writer).active.clone();
        match active {
            Some(a) if a.pack == loc.pack => a.sync_to(loc.offset + HEADER_LEN + loc.len),
            _ => {
                let (own, file) = {
                    let index = self.index_read();
                    let pack = &index.packs[loc.pack];
                    (pack.own, pack.file.clone())
                };
                if own {
                    // Closed by this process, which flushed it completely first.
                    Ok(())
                } else {
                    // Another process's record is complete on disk only once that process has
                    // flushed it, which may not have happened yet: flush it from here (the
                    // kernel writes a file's dirty pages whichever descriptor asks).
                    file.sync_data()
                }
            }
        }
    }

    fn lookup(&self, sha: &Sha) -> Option<(Location, Arc<File>)> {
        let index = self.index_read();
        let loc = *index.blobs.get(sha)?;
        Some((loc, index.packs[loc.pack].file.clone()))
    }

    fn read_record(&self, sha: &Sha, loc: Location, file: &File) -> io::Result<Vec<u8>> {
        let corrupt = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {}: {what}", hex(sha)),
            )
        };
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, loc.offset)?;
        if &header[..4] != MAGIC || header[4..36] != sha[..] {
            return Err(corrupt("record header damaged"));
        }
        let len = usize::try_from(loc.len).map_err(|_| corrupt("too large"))?;
        let mut data = vec![0u8; len];
        file.read_exact_at(&mut data, loc.offset + HEADER_LEN)?;
        if sha256(&data) != *sha {
            return Err(corrupt("content does not match its SHA-256"));
        }
        Ok(data)
    }
}

impl BlobStore for PackBlobStore {
    fn put(&self, data: &[u8]) -> io::Result<String> {
        let sha = sha256(data);
        if let Some((loc, _)) = self.lookup(&sha) {
            self.ensure_durable(loc)?;
            return Ok(hex(&sha));
        }
        let len = data.len() as u64;
        let (active, end) = {
            let mut w = lock(&self.writer);
            // The same bytes may have been stored while this thread waited for the writer.
            if let Some((loc, _)) = self.lookup(&sha) {
                drop(w);
                self.ensure_durable(loc)?;
                return Ok(hex(&sha));
            }
            let active = match &w.active {
                Some(a) if a.failed.load(Ordering::Acquire) => self.rotate(&mut w)?,
                Some(a) => {
                    let written = a.written.load(Ordering::Acquire);
                    if written > 0 && written + HEADER_LEN + len > self.pack_limit {
                        self.rotate(&mut w)?
                    } else {
                        a.clone()
                    }
                }
                None => self.rotate(&mut w)?,
            };
            let offset = active.written.load(Ordering::Acquire);
            let mut header = [0u8; HEADER_LEN as usize];
            header[..4].copy_from_slice(MAGIC);
            header[4..36].copy_from_slice(&sha);
            header[36..].copy_from_slice(&len.to_le_bytes());
            let wrote = active
                .file
                .write_all_at(&header, offset)
                .and_then(|()| active.file.write_all_at(data, offset + HEADER_LEN));
            if let Err(e) = wrote {
                // Nothing after `offset` counts; cut the partial record so that no reader
                // mistakes it for one, and the next record is written in its place.
                let _ = active.file.set_len(offset);
                return Err(e);
            }
            let end = offset + HEADER_LEN + len;
            active.written.store(end, Ordering::Release);
            self.index_write().blobs.insert(
                sha,
                Location {
                    pack: active.pack,
                    offset,
                    len,
                },
            );
            (active, end)
        };
        if let Err(e) = active.sync_to(end) {
            // What was not flushed may never reach the disk: forget it, so that storing the
            // same bytes again writes them again (into a new pack) instead of trusting them.
            let durable = active.durable();
            self.index_write()
                .blobs
                .retain(|_, l| l.pack != active.pack || l.offset + HEADER_LEN + l.len <= durable);
            return Err(e);
        }
        Ok(hex(&sha))
    }

    fn get(&self, sha256: &str) -> io::Result<Vec<u8>> {
        let sha = parse_sha(sha256)?;
        if let Some((loc, file)) = self.lookup(&sha) {
            return self.read_record(&sha, loc, &file);
        }
        // A blob of the one-file layout costs a stat; only then look for packs and records
        // that other instances added since the last look.
        match self.legacy.get(sha256) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        self.refresh()?;
        match self.lookup(&sha) {
            Some((loc, file)) => self.read_record(&sha, loc, &file),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no blob {sha256}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> Vec<u8> {
        format!("%PDF-1.7\n% letter {n}\n")
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(n as u8, n * 37))
            .collect()
    }

    fn packs(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("packs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_dedup_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        let shas: Vec<String> = (0..50).map(|n| store.put(&letter(n)).unwrap()).collect();
        assert_eq!(shas[7], hex(&sha256(&letter(7))));
        for (n, sha) in shas.iter().enumerate() {
            assert_eq!(store.get(sha).unwrap(), letter(n));
        }
        let size = std::fs::metadata(&packs(dir.path())[0]).unwrap().len();
        assert_eq!(store.put(&letter(3)).unwrap(), shas[3]);
        assert_eq!(
            std::fs::metadata(&packs(dir.path())[0]).unwrap().len(),
            size,
            "the same bytes are stored once"
        );
        drop(store);
        let again = PackBlobStore::open(dir.path()).unwrap();
        for (n, sha) in shas.iter().enumerate() {
            assert_eq!(again.get(sha).unwrap(), letter(n));
        }
        let missing = hex(&sha256(b"never stored"));
        assert_eq!(
            again.get(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            again.get("../../etc/passwd").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn packs_rotate_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::with_pack_limit(dir.path(), 4096).unwrap();
        let shas: Vec<String> = (0..40).map(|n| store.put(&letter(n)).unwrap()).collect();
        let files = packs(dir.path());
        assert!(files.len() > 3, "{files:?}");
        for f in &files {
            // Every record here is smaller than the limit, so no pack goes past it.
            assert!(std::fs::metadata(f).unwrap().len() <= 4096, "{f:?}");
        }
        let reopened = PackBlobStore::open(dir.path()).unwrap();
        for (n, sha) in shas.iter().enumerate() {
            assert_eq!(reopened.get(sha).unwrap(), letter(n));
        }
    }

    #[test]
    fn an_incomplete_last_record_is_ignored_and_nothing_is_appended_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        let kept = store.put(&letter(5)).unwrap();
        let lost = store.put(&letter(6)).unwrap();
        drop(store);
        // A crash in the middle of writing the second record.
        let pack = packs(dir.path())[0].clone();
        let full = std::fs::metadata(&pack).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(full - 10)
            .unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&kept).unwrap(), letter(5));
        assert_eq!(
            store.get(&lost).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Stored again, it goes to a new pack; the damaged one is left as it is.
        assert_eq!(store.put(&letter(6)).unwrap(), lost);
        assert_eq!(std::fs::metadata(&pack).unwrap().len(), full - 10);
        assert_eq!(packs(dir.path()).len(), 2);
        let reopened = PackBlobStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&lost).unwrap(), letter(6));
    }

    #[test]
    fn damaged_content_is_an_error_not_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        let sha = store.put(&letter(9)).unwrap();
        let pack = packs(dir.path())[0].clone();
        let f = OpenOptions::new().write(true).open(&pack).unwrap();
        f.write_all_at(b"X", HEADER_LEN + 3).unwrap();
        let err = store.get(&sha).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(&sha), "{err}");
    }

    #[test]
    fn instances_sharing_a_directory_read_each_others_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let a = PackBlobStore::open(dir.path()).unwrap();
        let b = PackBlobStore::open(dir.path()).unwrap();
        let from_a = a.put(&letter(11)).unwrap();
        let from_b = b.put(&letter(12)).unwrap();
        assert_eq!(b.get(&from_a).unwrap(), letter(11));
        assert_eq!(a.get(&from_b).unwrap(), letter(12));
        // And a record appended to a pack already known is found too.
        let later = a.put(&letter(13)).unwrap();
        assert_eq!(b.get(&later).unwrap(), letter(13));
        assert_eq!(
            packs(dir.path()).len(),
            2,
            "each instance appends to its own pack"
        );
    }

    #[test]
    fn concurrent_puts_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(PackBlobStore::with_pack_limit(dir.path(), 64 << 10).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| {
                            let n = t * 40 + i;
                            (n, store.put(&letter(n % 200)).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<(usize, String)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let reopened = PackBlobStore::open(dir.path()).unwrap();
        for (n, sha) in &all {
            assert_eq!(reopened.get(sha).unwrap(), letter(n % 200));
        }
        // 320 puts of 200 different letters: each stored once.
        let stored: u64 = packs(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let unique: u64 = (0..200).map(|n| HEADER_LEN + letter(n).len() as u64).sum();
        assert_eq!(stored, unique);
    }

    /// After a failed flush nothing more is appended to that pack; what it held unflushed is
    /// forgotten and written again when stored again.
    #[test]
    fn a_failed_flush_retires_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        let kept = store.put(&letter(1)).unwrap();
        let active = lock(&store.writer).active.clone().unwrap();
        // As sync_to leaves it when fdatasync fails.
        active.failed.store(true, Ordering::Release);
        assert!(active.sync_to(u64::MAX).is_err());
        let next = store.put(&letter(2)).unwrap();
        assert_eq!(packs(dir.path()).len(), 2, "a new pack after the failure");
        assert_eq!(store.get(&kept).unwrap(), letter(1));
        assert_eq!(store.get(&next).unwrap(), letter(2));
    }

    /// This process's packs are indexed as written and never scanned as another's.
    #[test]
    fn refresh_leaves_own_packs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackBlobStore::with_pack_limit(dir.path(), 2048).unwrap();
        for n in 0..10 {
            store.put(&letter(n)).unwrap();
        }
        store.refresh().unwrap();
        let index = store.index_read();
        assert_eq!(index.packs.len(), packs(dir.path()).len());
        assert!(index.packs.iter().all(|p| p.own));
    }

    #[test]
    fn blobs_of_the_one_file_layout_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = FsBlobStore {
            dir: dir.path().to_path_buf(),
        };
        let sha = old.put(&letter(21)).unwrap();
        let store = PackBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&sha).unwrap(), letter(21));
    }
}
