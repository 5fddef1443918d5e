//! Uploads: streaming, all-or-nothing bundle extraction and atomic file
//! writes.

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not built yet.
    #[error("uploads are not available in this build")]
    NotImplemented,
}

/// Name of the marker left in a work dir holding an extracted bundle.
pub const BUNDLE_MARKER: &str = ".sandboxd-bundle";

/// Whether a run's work dir holds an extracted bundle.
pub fn has_bundle(work_dir: &std::path::Path) -> bool {
    work_dir.join(BUNDLE_MARKER).exists()
}
