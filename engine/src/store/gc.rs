//! Retention of superseded artifact files (spec §10.3).

use std::io;
use std::time::{Duration, SystemTime};

use super::fs::check_names;
use super::{LOCK_SUFFIX, Storage, TEMP_PREFIX};
use crate::error::{Error, Result};

impl Storage {
    /// After a successful publish: deletes files of `<ns>/<name>` older than `ttl`, then the oldest
    /// beyond `records` files in total. `keep_file` (the current inventory's file) is never deleted and
    /// counts towards `records`; `.lock` files and in-progress temporary files are ignored. Returns the
    /// deleted file names, oldest first. An absent directory is not an error.
    pub fn retention_gc(
        &self,
        namespace: &str,
        name: &str,
        keep_file: &str,
        ttl: Duration,
        records: usize,
    ) -> Result<Vec<String>> {
        check_names(namespace, name, None)?;
        let ctx = || format!("retention of {}", Storage::relative_path(namespace, name, ""));
        let dir = match self.open_artifact_dir(namespace, name) {
            Ok(dir) => dir,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(Error::io(ctx(), e)),
        };

        let mut candidates = Vec::new();
        let mut keep_present = false;
        for entry in dir.entries().map_err(|e| Error::io(ctx(), e))? {
            let entry = entry.map_err(|e| Error::io(ctx(), e))?;
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            if file.ends_with(LOCK_SUFFIX) || file.starts_with(TEMP_PREFIX) {
                continue;
            }
            let meta = entry.metadata().map_err(|e| Error::io(ctx(), e))?;
            if !meta.is_file() {
                continue;
            }
            if file == keep_file {
                keep_present = true;
                continue;
            }
            let mtime = meta.modified().map_err(|e| Error::io(ctx(), e))?.into_std();
            candidates.push((mtime, file));
        }
        // Oldest first; the name breaks ties so the result is deterministic.
        candidates.sort();

        let now = SystemTime::now();
        let expired = candidates
            .iter()
            .take_while(|(mtime, _)| now.duration_since(*mtime).is_ok_and(|age| age > ttl))
            .count();
        let remaining = candidates.len() - expired + usize::from(keep_present);
        let over = remaining.saturating_sub(records).min(candidates.len() - expired);
        let doomed = &candidates[..expired + over];

        let mut deleted = Vec::with_capacity(doomed.len());
        for (_, file) in doomed {
            match dir.remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(ctx(), e)),
            }
            self.records()
                .remove(&Storage::relative_path(namespace, name, file));
            deleted.push(file.clone());
        }
        Ok(deleted)
    }
}
