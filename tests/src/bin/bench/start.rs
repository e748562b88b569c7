//! Start-up: process start to first embedding with the page cache warm, and cold (the
//! files the server maps and reads evicted from the page cache first), and the resident
//! memory after load.

use ember_e2e::Server;
use serde_json::json;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Start-up figures of one backend.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// Median ms from spawn to the first embedding, page cache warm.
    pub warm_ms: f64,
    /// The same after evicting the server's files from the page cache.
    pub cold_ms: f64,
    /// Median resident memory after the first embedding, MiB.
    pub rss_mib: f64,
    /// MiB of the server's files evicted before each cold start.
    pub evicted_mib: f64,
    /// MiB of them still cached after eviction (pages another process keeps mapped).
    pub kept_mib: f64,
}

/// Spawns the server and times its first embedding; returns the time (ms), the server and
/// its resident memory then (MiB).
fn first_embedding(env: &[(&str, &str)]) -> (f64, Server, f64) {
    let t = Instant::now();
    let server = Server::start(env);
    let (status, body) = server.post("/v1/embeddings", &json!({"input": "warm"}));
    assert_eq!(status, 200, "{body}");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let rss = server.memory_mib("VmRSS");
    (ms, server, rss)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// `runs` warm and `runs` cold starts of the server with `env`, reading the files under
/// `dirs` (the model, and the server's cache with what it converted from it).
pub fn measure(env: &[(&str, &str)], dirs: &[&Path], runs: usize) -> Startup {
    // A first start reads everything into the page cache, converts what it converts, and
    // shows what the server maps.
    let (_, server, _) = first_embedding(env);
    let mut files = mapped_files(server.pid());
    drop(server);
    for dir in dirs {
        files.extend(files_under(dir));
    }
    let (mut warm, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (ms, _server, mib) = first_embedding(env);
        warm.push(ms);
        rss.push(mib);
    }
    let (mut cold, mut evicted, mut kept) = (Vec::new(), 0.0, 0.0);
    for _ in 0..runs {
        (evicted, kept) = evict(&files);
        cold.push(first_embedding(env).0);
    }
    Startup {
        warm_ms: median(warm),
        cold_ms: median(cold),
        rss_mib: median(rss),
        evicted_mib: evicted,
        kept_mib: kept,
    }
}

/// The regular files process `pid` has mapped (its binary, plugin and libraries).
fn mapped_files(pid: u32) -> BTreeSet<PathBuf> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && !path.starts_with("/dev/"))
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .collect()
}

/// The files under `dir`, following links (a model directory).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}

/// Asks the kernel to drop `files` from the page cache; returns their size and how much of
/// them stayed cached, in MiB.
fn evict(files: &BTreeSet<PathBuf>) -> (f64, f64) {
    let (mut total, mut kept) = (0u64, 0u64);
    for path in files {
        let Ok(file) = File::open(path) else { continue };
        let len = file.metadata().map_or(0, |m| m.len());
        // SAFETY: an advice call on a file descriptor this function owns.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        total += len;
        kept += cached(&file, len);
    }
    (total as f64 / 1048576.0, kept as f64 / 1048576.0)
}

/// Bytes of `file` (of `len` bytes) in the page cache now.
fn cached(file: &File, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    // SAFETY: a private read-only mapping of a file this function holds open, unmapped
    // before returning; mincore only reads the page table into `pages`.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return 0;
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64;
        let mut pages = vec![0u8; len.div_ceil(page) as usize];
        let resident = if libc::mincore(map, len as usize, pages.as_mut_ptr()) == 0 {
            pages.iter().filter(|p| **p & 1 == 1).count() as u64 * page
        } else {
            0
        };
        libc::munmap(map, len as usize);
        resident.min(len)
    }
}
