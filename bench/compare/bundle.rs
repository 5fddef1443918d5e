//! The bundle of scenario 2: a gzip tar of about 5,000 files whose
//! compressed size is 200 MiB, made once from a fixed seed and cached under
//! `bench/out/`.
//!
//! Files mix incompressible bytes with text (a bundle holds both: sources
//! and binaries); each file's size is steered so the compressed total lands
//! on the target.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, RngCore, SeedableRng};

/// Compressed size aimed at.
pub(crate) const TARGET_BYTES: u64 = 200 << 20;
/// Regular files in the bundle.
pub(crate) const FILES: usize = 5_000;

/// The generated bundle.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) files: usize,
    pub(crate) dirs: usize,
    pub(crate) extracted_bytes: u64,
}

/// Counts what goes through to the file.
struct Counting<W> {
    inner: W,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "return", "import", "def", "class", "self", "value", "error", "result",
    "config", "request", "response", "handler", "async", "await", "struct", "impl", "pub",
    "string", "number", "list", "map", "index", "count", "path", "file", "data", "test",
];

/// The bundle at `dir/bundle-200MiB.tar.gz`, made when missing (its
/// description sits beside it).
pub(crate) fn ensure(dir: &Path) -> anyhow::Result<Bundle> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("bundle-200MiB.tar.gz");
    let meta = dir.join("bundle-200MiB.json");
    if let (Ok(text), true) = (std::fs::read_to_string(&meta), path.exists()) {
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if v["bytes"].as_u64() == Some(std::fs::metadata(&path)?.len()) {
            return Ok(Bundle {
                path,
                bytes: v["bytes"].as_u64().unwrap_or(0),
                files: v["files"].as_u64().unwrap_or(0) as usize,
                dirs: v["dirs"].as_u64().unwrap_or(0) as usize,
                extracted_bytes: v["extracted_bytes"].as_u64().unwrap_or(0),
            });
        }
    }
    let tmp = dir.join("bundle-200MiB.tar.gz.part");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out = Counting {
        inner: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
        count: count.clone(),
    };
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut raw_total = 0u64;
    let mut dirs = 0;
    let mut buf = Vec::new();
    for top in 0..50 {
        for sub in 0..2 {
            let dir_name = format!("bundle/pkg{top:02}/mod{sub}/");
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(1_700_000_000);
            tar.append_data(&mut header, &dir_name, std::io::empty())?;
            dirs += 1;
        }
    }
    for i in 0..FILES {
        // Steer: what is left to reach the target, spread over the files
        // left, at the compression ratio seen so far.
        let compressed = count.load(std::sync::atomic::Ordering::Relaxed);
        let ratio = if raw_total > 1 << 20 {
            compressed as f64 / raw_total as f64
        } else {
            0.8
        };
        let left = TARGET_BYTES.saturating_sub(compressed) as f64;
        let mean = left / (FILES - i) as f64 / ratio;
        let size = (mean * rng.gen_range(0.25..1.75)).max(64.0) as usize;
        buf.clear();
        buf.resize(size, 0);
        if i % 4 == 0 {
            // A text file: compresses about 4:1.
            let mut at = 0;
            while at < size {
                let word = WORDS[rng.gen_range(0..WORDS.len())].as_bytes();
                let n = word.len().min(size - at);
                buf[at..at + n].copy_from_slice(&word[..n]);
                at += n;
                if at < size {
                    buf[at] = if rng.gen_range(0..8) == 0 {
                        b'\n'
                    } else {
                        b' '
                    };
                    at += 1;
                }
            }
        } else {
            rng.fill_bytes(&mut buf);
        }
        let name = format!("bundle/pkg{:02}/mod{}/file{i:05}.dat", i % 50, (i / 50) % 2);
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(size as u64);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, &name, &buf[..])?;
        raw_total += size as u64;
    }
    let mut out = tar.into_inner()?.finish()?;
    out.flush()?;
    drop(out);
    let bytes = std::fs::metadata(&tmp)?.len();
    std::fs::rename(&tmp, &path)?;
    std::fs::write(
        &meta,
        serde_json::json!({"bytes": bytes, "files": FILES, "dirs": dirs, "extracted_bytes": raw_total})
            .to_string(),
    )?;
    Ok(Bundle {
        path,
        bytes,
        files: FILES,
        dirs,
        extracted_bytes: raw_total,
    })
}
