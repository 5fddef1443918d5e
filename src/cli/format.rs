//! Human output of the client commands: aligned tables, durations, ages,
//! commands, and writing to stdout.
//!
//! The table is hand-written: a dozen lines of padding, where a table crate
//! would add boxes and options this output does not want (it should look
//! like `ps` or `docker ps`, easy to read and to `awk`).

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::client::ClientError;

/// Writes `text` to stdout; a closed stdout (`| head`) is not an error.
pub(crate) fn print(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(ClientError::Io {
            action: "writing to",
            path: "stdout".to_owned(),
            source,
        }),
    }
}

/// Prints a JSON value, pretty, with a final newline.
pub(crate) fn print_json(value: &serde_json::Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    print(&format!("{text}\n"))
}

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
    }
    text
}

/// `1h 2m`, `3m 4s`, `5.2s`, `0.31s`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    if secs < 10.0 {
        return format!("{secs:.2}s");
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = secs as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    match h {
        0 => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// How long ago `at` was: `5s`, `3m`, `2h`, `4d`.
pub(crate) fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// An argv as a shell would show it, cut to `max` characters.
pub(crate) fn command(argv: &[String], max: usize) -> String {
    let text = match argv {
        [bash, c, script] if bash == "bash" && c == "-c" => script.clone(),
        _ => argv
            .iter()
            .map(|arg| quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let text = text.replace('\n', " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Seconds as a [`Duration`] for messages.
pub(crate) fn secs(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        return format!("{}s", secs as u64);
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["r1".to_owned(), "running".to_owned(), "sleep 9".to_owned()],
            vec!["long-id".to_owned(), "ok".to_owned(), "true".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "STATE", "COMMAND"], &rows),
            "ID       STATE    COMMAND\nr1       running  sleep 9\nlong-id  ok       true\n"
        );
    }

    #[test]
    fn durations_read_naturally() {
        for (secs, text) in [
            (0.314, "0.31s"),
            (12.34, "12.3s"),
            (63.0, "1m 3s"),
            (3725.0, "1h 2m"),
            (-1.0, "-"),
        ] {
            assert_eq!(duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn commands_are_quoted_and_cut() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(command(&argv(&["python", "main.py"]), 40), "python main.py");
        assert_eq!(
            command(&argv(&["echo", "a b", "it's"]), 40),
            r"echo 'a b' 'it'\''s'"
        );
        assert_eq!(
            command(&argv(&["bash", "-c", "echo hi; exit 3"]), 40),
            "echo hi; exit 3"
        );
        assert_eq!(command(&argv(&["abcdefghij"]), 5), "abcd…");
    }
}
