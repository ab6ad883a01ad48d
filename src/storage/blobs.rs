//! PDFs live in a blob store addressed by their SHA-256; the database holds metadata only.

use std::io::Write;
use std::path::PathBuf;

/// Content-addressed storage of document versions.
pub trait BlobStore: Send + Sync {
    /// Store `data` and return its hex SHA-256. Storing the same bytes twice is a no-op.
    fn put(&self, data: &[u8]) -> std::io::Result<String>;
    /// The bytes whose SHA-256 is `sha256`.
    fn get(&self, sha256: &str) -> std::io::Result<Vec<u8>>;
}

/// Files under `dir/ab/abcdef…`, written to a temporary file, synced and renamed.
pub struct FsBlobStore {
    pub dir: PathBuf,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl FsBlobStore {
    fn path(&self, sha256: &str) -> std::io::Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a SHA-256",
            ));
        }
        Ok(self.dir.join(&sha256[..2]).join(sha256))
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, data: &[u8]) -> std::io::Result<String> {
        let sha = hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
        let path = self.path(&sha)?;
        if path.exists() {
            return Ok(sha);
        }
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(sha)
    }

    /// The bytes are hashed again: a damaged or replaced file is an error, never wrong content.
    fn get(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let data = std::fs::read(self.path(sha256)?)?;
        let actual = hex(ring::digest::digest(&ring::digest::SHA256, &data).as_ref());
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("blob {sha256}: the stored bytes hash to {actual}"),
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::{BlobStore, FsBlobStore};

    #[test]
    fn get_rechecks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore {
            dir: dir.path().to_path_buf(),
        };
        let sha = store.put(b"%PDF-1.7 surat").unwrap();
        assert_eq!(store.get(&sha).unwrap(), b"%PDF-1.7 surat");
        // The file is changed behind the store's back: reading it is an error.
        let path = dir.path().join(&sha[..2]).join(&sha);
        std::fs::write(&path, b"%PDF-1.7 surat palsu").unwrap();
        let err = store.get(&sha).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&sha), "{err}");
    }
}
