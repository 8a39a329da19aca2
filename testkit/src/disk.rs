//! A small disk for fault tests: a tmpfs mounted over a directory, filled on demand,
//! unmounted when dropped. Mounting needs root (CI and scripts/test run as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a few MiB mounted over a directory; unmounted (lazily: a service may still
/// hold files open) when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `"64m"`) over `dir`, creating it. Panics with what
    /// to do when not root or when `mount` fails.
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        assert!(
            nix::unistd::geteuid().is_root(),
            "a full disk is made with a tmpfs, which needs root (CI and scripts/test run as root)"
        );
        let mount = crate::require_binary("mount", "mount");
        std::fs::create_dir_all(dir).expect("create the small disk's mount point");
        let output = Command::new(mount)
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "mount -t tmpfs over {} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        SmallDisk {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fills the disk with a file of zeros until a write fails; returns its path (delete
    /// it to free the space).
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler file");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever smaller room is left, too.
        while file.write_all(&chunk[..512]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
