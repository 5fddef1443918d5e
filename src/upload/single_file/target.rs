//! The target of a single-file upload as the query gives it: the octal
//! `mode` and the absolute `path`, split into parent components and a
//! name, with Linux's name and path length limits.

use std::ffi::OsString;
use std::path::{Component, Path};

use crate::upload::UploadError;

/// Parses an octal mode: `644`, `0644` or `0o644`; at most `0777`.
pub(super) fn parse_mode(text: Option<&str>) -> Result<u32, UploadError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(0o644);
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(UploadError::Invalid(format!(
            "mode {text:?} must be octal permission bits from 0000 to 0777, e.g. 0644"
        ))),
    }
}

/// Splits an absolute path into its parent's components and its name.
/// `.` components are dropped; `..` and a trailing `/` are refused.
pub(super) fn parse_path(text: &str) -> Result<(Vec<OsString>, OsString), UploadError> {
    let invalid = |why: &str| UploadError::Invalid(format!("path {text:?} {why}"));
    if !text.starts_with('/') {
        return Err(invalid("must be absolute, e.g. /tmp/input.json"));
    }
    if text.ends_with('/') || text.contains('\0') {
        return Err(invalid("must name a file (no trailing '/', no NUL)"));
    }
    if text.len() >= PATH_MAX {
        return Err(UploadError::Invalid(format!(
            "path {} is {} bytes long; paths must be shorter than {PATH_MAX} bytes",
            shorten(text),
            text.len()
        )));
    }
    let mut parts = Vec::new();
    for component in Path::new(text).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("must not contain '..' components")),
            Component::Normal(part) if part.len() > NAME_MAX => {
                return Err(UploadError::Invalid(format!(
                    "path {}: a component is {} bytes long; names may have at most {NAME_MAX} bytes",
                    shorten(text),
                    part.len()
                )))
            }
            Component::Normal(part) => parts.push(part.to_owned()),
            Component::Prefix(_) => return Err(invalid("is not a Unix path")),
        }
    }
    let name = parts
        .pop()
        .ok_or_else(|| invalid("must name a file, not the root"))?;
    Ok((parts, name))
}

/// Longest file name (Linux's NAME_MAX, that of every common file system).
const NAME_MAX: usize = 255;

/// Paths must be shorter than this (Linux's PATH_MAX, with its NUL).
const PATH_MAX: usize = 4096;

/// The start of a long path, for messages.
pub(super) fn shorten(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{:?}...", &text[..at]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modes are octal permission bits; nothing above 0777.
    #[test]
    fn modes() {
        for (text, want) in [
            (None, Some(0o644)),
            (Some(""), Some(0o644)),
            (Some("0644"), Some(0o644)),
            (Some("755"), Some(0o755)),
            (Some("0o600"), Some(0o600)),
            (Some("0"), Some(0)),
            (Some("4755"), None),
            (Some("0999"), None),
            (Some("rw-r--r--"), None),
            (Some("-1"), None),
        ] {
            assert_eq!(parse_mode(text).ok(), want, "{text:?}");
        }
    }

    /// Paths are absolute, name a file, and have no `..`.
    #[test]
    fn paths() {
        let (parents, name) = parse_path("/tmp/./a/b.json").unwrap();
        assert_eq!(parents, [OsString::from("tmp"), OsString::from("a")]);
        assert_eq!(name, "b.json");
        for bad in ["tmp/x", "/tmp/../etc/passwd", "/tmp/dir/", "/", ""] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
