//! What an installation generates at first start and keeps in its data
//! directory: the operator and service tokens, the provisioner's mesh id.
//! Several services (or replicas) may share one data directory, as the
//! Compose stack's do, and start at the same moment; each such value must
//! then be generated once and read whole by everyone else.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// The value kept in `path`, or, when there is none yet, a fresh one from
/// `generate`, written so that a concurrent reader sees either no file or
/// the whole value and concurrent writers agree on one winner. `valid`
/// rejects a file that holds something else, rather than overwriting it.
pub fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> String,
    valid: impl Fn(&str) -> bool,
) -> io::Result<String> {
    let read = |path: &Path| -> io::Result<String> {
        let value = fs::read_to_string(path)?.trim().to_owned();
        if valid(&value) {
            Ok(value)
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} holds no usable value", path.display())))
        }
    };
    match read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let value = generate();
    // Written whole under a private name, then linked into place: a link
    // never replaces an existing file, so the first writer wins and nobody
    // reads a half-written value.
    let file_name = path.file_name().and_then(|name| name.to_str()).unwrap_or("value");
    let staging = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
        file.write_all(value.as_bytes())?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(&staging, path));
    let _ = fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(value),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt, sync::Arc};

    use super::*;

    fn scratch_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("agentmesh-installation-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_private_value() {
        let dir = scratch_dir();
        let path = Arc::new(dir.join("nested/value"));
        let threads: Vec<_> = (0..16)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create(&path, || format!("value-{n}"), |v| !v.is_empty()).unwrap())
            })
            .collect();
        let values: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(values.iter().all(|v| v == &values[0]), "{values:?}");
        assert_eq!(fs::read_to_string(&*path).unwrap(), values[0]);
        assert_eq!(fs::metadata(&*path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "staging files left behind: {leftovers:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_kept_value_is_reused_and_a_foreign_one_refused() {
        let dir = scratch_dir();
        let path = dir.join("value");
        let first = load_or_create(&path, || "one".to_owned(), |v| !v.is_empty()).unwrap();
        let again = load_or_create(&path, || "two".to_owned(), |v| !v.is_empty()).unwrap();
        assert_eq!((first.as_str(), again.as_str()), ("one", "one"));
        fs::write(&path, "not-it\n").unwrap();
        let err = load_or_create(&path, || "three".to_owned(), |v| v == "one").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("holds no usable value"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
