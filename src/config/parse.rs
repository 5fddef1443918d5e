//! The flag value parsers: sizes, durations, `--retain-for`, `--listen`
//! and base URLs, each with an error that names the flag or gives an
//! example.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{Listen, RunAs};

/// How long ended runs are kept: `None` for as long as the count allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionAge(pub Option<Duration>);

/// Parses `--retain-for`: a duration, or `off`/`0` for no age limit.
pub fn parse_retention_age(value: &str) -> Result<RetentionAge, String> {
    match value.trim() {
        "off" | "0" | "" => Ok(RetentionAge(None)),
        text => parse_duration(text).map(|age| RetentionAge(Some(age))),
    }
}

/// Parses `HOST:PORT` or `unix:/path`.
pub fn parse_listen(value: &str) -> anyhow::Result<Listen> {
    if let Some(path) = value.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            bail!("--listen {value:?}: a unix socket path must be absolute, e.g. unix:/run/sandboxd.sock");
        }
        return Ok(Listen::Unix(path));
    }
    let addr = value.parse::<SocketAddr>().with_context(|| {
        format!("--listen {value:?} is not HOST:PORT (e.g. 127.0.0.1:60001) or unix:/path.sock")
    })?;
    Ok(Listen::Tcp(addr))
}

/// Parses a duration given as seconds (`90`, `1.5`) or humantime (`10s`, `24h`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && (0.0..1e12).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("{value:?} is not a duration in seconds"));
    }
    humantime::parse_duration(value)
        .map_err(|err| format!("{value:?} is not a duration (e.g. 30, 10s, 24h): {err}"))
}

/// Parses a size: bytes (`1048576`) or a number with a unit, binary
/// (`512MiB`, `64KiB`, `2GiB`, also `512M`, `2g`) or decimal (`500MB`);
/// a space before the unit is allowed (`512 MiB`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let example = "e.g. 1048576, 512MiB, 2GiB, 500MB";
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size ({example})"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("{value:?}: unknown unit {unit:?} ({example})")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{value:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// An origin, given as a URL (`https://app.all-hands.dev` or any URL of it).
pub(super) fn parse_origin(flag: &str, value: &str) -> anyhow::Result<url::Origin> {
    let url = parse_base_url(flag, value)?;
    let url = reqwest::Url::parse(&url)?;
    if url.path() != "/" || url.query().is_some() {
        bail!("{flag} {value:?} must be an origin: scheme://host[:port], with no path");
    }
    Ok(url.origin())
}

pub(super) fn parse_base_url(flag: &str, value: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(value)
        .with_context(|| format!("{flag} {value:?} is not a URL (e.g. http://127.0.0.1:8000)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("{flag} {value:?} must be an http:// or https:// URL with a host");
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// `USER[:GROUP]`, each a name or a number; the group defaults to the
/// user's primary group. Root is refused: it would separate nothing.
pub(super) fn parse_user(flag: &str, spec: &str) -> anyhow::Result<RunAs> {
    use nix::unistd::{Group, Uid, User};
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(user).ok().flatten(),
    };
    let uid = match (&found, user.parse::<u32>()) {
        (Some(found), _) => found.uid.as_raw(),
        (None, Ok(uid)) => uid,
        (None, Err(_)) => bail!("{flag} {spec}: no user named {user}"),
    };
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match Group::from_name(group).ok().flatten() {
                Some(found) => found.gid.as_raw(),
                None => bail!("{flag} {spec}: no group named {group}"),
            },
        },
        None => match &found {
            Some(found) => found.gid.as_raw(),
            None => uid,
        },
    };
    if uid == 0 || gid == 0 {
        bail!("{flag} {spec}: must not be root (uid and gid must not be 0)");
    }
    Ok(RunAs { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            Listen::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            parse_listen("unix:/a.sock").unwrap(),
            Listen::Unix("/a.sock".into())
        );
        assert!(parse_listen("unix:rel.sock").is_err());
        let err = parse_listen("localhost").unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
