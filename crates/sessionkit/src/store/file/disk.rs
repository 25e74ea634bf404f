//! The file store's on-disk basics: URL parsing, the directory layout and its marker,
//! owner-only permissions, and the fsync helpers every write goes through.

use super::*;

pub(super) fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::backend(KIND, op, e)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Latest file time written: file systems cap timestamps (ext4 at year 2446), and a deadline
/// this far out (year 2381) is "never" for GC purposes anyway.
pub(super) const MAX_MTIME: Millis = 13_000_000_000_000;

pub(super) fn to_system_time(t: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t.clamp(0, MAX_MTIME) as u64)
}

pub(super) fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as Millis,
        Err(_) => 0,
    }
}

/// Creates directories (and missing parents) readable by the owner only: session data is
/// private to the service.
pub(super) fn private_dir_all(path: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// Options for a new private file (owner read/write only).
pub(super) fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// fsync of a directory, making renames and unlinks in it durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Parses `file:///abs/dir` or `file://relative/dir`.
pub(super) fn parse_url(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("file://")
        .ok_or_else(|| Error::bad_url(url, "not a file:// URL"))?;
    if rest.contains('?') || rest.contains('#') {
        return Err(Error::bad_url(
            url,
            "file store URL: no query parameters are supported",
        ));
    }
    if rest.is_empty() {
        return Err(Error::bad_url(
            url,
            "file store URL names no directory; use file:///abs/dir or file://relative/dir",
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Checks or creates the store layout under `root`.
pub(super) fn prepare(root: &Path) -> Result<()> {
    let not_ours = |why: String| {
        Error::Config(format!(
            "{} is not a sessionkit file store: {why}",
            root.display()
        ))
    };
    match fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err(not_ours("not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_dir_all(root).map_err(io_err("open"))?;
        }
        Err(e) => return Err(io_err("open")(e)),
    }
    let marker = root.join(MARKER);
    match fs::read(&marker) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let version = text
                .strip_prefix(MARKER_PREFIX)
                .and_then(|v| v.trim_end().parse::<u32>().ok())
                .ok_or_else(|| not_ours(format!("unrecognised {MARKER} file")))?;
            if version > FORMAT {
                return Err(Error::Config(format!(
                    "{} has sessionkit file store format {version}, newer than this build \
                     understands ({FORMAT}); upgrade sessionkit",
                    root.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Refuse to scatter files into a directory that holds something else.
            for entry in fs::read_dir(root).map_err(io_err("open"))? {
                let name = entry.map_err(io_err("open"))?.file_name();
                let name = name.to_string_lossy();
                if !(name == "s" || name == "u" || name.starts_with(".SESSIONKIT")) {
                    return Err(not_ours(format!(
                        "the directory is not empty (found {name:?}) and has no {MARKER} file"
                    )));
                }
            }
            let tmp = root.join(format!(".{MARKER}.tmp.{}", std::process::id()));
            let write = || -> io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(format!("{MARKER_PREFIX}{FORMAT}\n").as_bytes())?;
                f.sync_all()?;
                fs::rename(&tmp, &marker)?;
                sync_dir(root)
            };
            write().map_err(io_err("open"))?;
        }
        Err(e) => return Err(io_err("open")(e)),
    }
    let mut created = false;
    for dir in ["s", "u"] {
        created |= create_dir(&root.join(dir))?;
    }
    for shard in 0..SHARDS {
        created |= create_dir(&root.join("s").join(format!("{shard:02x}")))?;
    }
    if created {
        sync_dir(&root.join("s")).map_err(io_err("open"))?;
        sync_dir(root).map_err(io_err("open"))?;
    }
    Ok(())
}

/// Creates a directory if missing; true if it did.
pub(super) fn create_dir(path: &Path) -> Result<bool> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Ok(false)
            } else {
                Err(Error::Config(format!(
                    "{} should be a directory of the file store",
                    path.display()
                )))
            }
        }
        Err(e) => Err(io_err("open")(e)),
    }
}
