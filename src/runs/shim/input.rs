//! The frames of a run's input socket (`runs/<id>/stdin.sock`), written by
//! the daemon and read by the run's shim: input bytes, a terminal size,
//! and the end of input. Each frame is a kind byte, a little-endian u32
//! length and that many bytes. The socket belongs to the shim, so a
//! restarted daemon reaches a run's input by connecting again.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Most bytes of input in one frame; longer input goes in several.
pub const MAX_DATA: usize = 64 * 1024;

const DATA: u8 = 0;
const RESIZE: u8 = 1;
const EOF: u8 = 2;

/// One message on the input socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFrame {
    /// Bytes for the command's stdin (or typed into its terminal).
    Data(Vec<u8>),
    /// The terminal's new size (a terminal run only).
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The end of input: a pipe's write end is closed; a terminal gets its
    /// end-of-file character (Ctrl-D).
    Eof,
}

impl InputFrame {
    /// The frame as bytes. Data longer than [`MAX_DATA`] must be split by
    /// the caller ([`data_frames`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            InputFrame::Data(bytes) => (DATA, bytes.clone()),
            InputFrame::Resize { cols, rows } => {
                let mut size = cols.to_le_bytes().to_vec();
                size.extend_from_slice(&rows.to_le_bytes());
                (RESIZE, size)
            }
            InputFrame::Eof => (EOF, Vec::new()),
        };
        let mut frame = Vec::with_capacity(5 + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    /// Reads one frame; `None` at a clean end of the connection.
    pub fn read_from(reader: &mut impl Read) -> io::Result<Option<InputFrame>> {
        let mut head = [0u8; 5];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_DATA {
            return Err(io::Error::other(format!("input frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        match (head[0], len) {
            (DATA, _) => Ok(Some(InputFrame::Data(payload))),
            (RESIZE, 4) => Ok(Some(InputFrame::Resize {
                cols: u16::from_le_bytes([payload[0], payload[1]]),
                rows: u16::from_le_bytes([payload[2], payload[3]]),
            })),
            (EOF, 0) => Ok(Some(InputFrame::Eof)),
            (kind, _) => Err(io::Error::other(format!("unknown input frame {kind}"))),
        }
    }
}

/// `bytes` as data frames of at most [`MAX_DATA`] bytes each, concatenated.
pub fn data_frames(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5 * (bytes.len() / MAX_DATA + 1));
    for chunk in bytes.chunks(MAX_DATA) {
        out.push(DATA);
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Longest socket path used as it is (`sun_path` holds 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// A socket path short enough for `sun_path`: `path` itself, or, when it
/// is longer (a long state dir and run id), the same file reached through
/// `/proc/self/fd/<dir>/`, with the directory's descriptor to keep open
/// while binding or connecting.
fn short_path(path: &Path) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok((path.to_owned(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_owned(), None));
    };
    let dir = OwnedFd::from(std::fs::File::open(dir)?);
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((short, Some(dir)))
}

/// Listens at `path` (the shim's side).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let (short, _dir) = short_path(path)?;
    UnixListener::bind(short)
}

/// Connects to the input socket at `path` (the daemon's side).
pub async fn connect(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let (short, _dir) = short_path(path)?;
    tokio::net::UnixStream::connect(short).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_as_written() {
        let frames = [
            InputFrame::Data(b"print(1)\n".to_vec()),
            InputFrame::Resize {
                cols: 132,
                rows: 43,
            },
            InputFrame::Eof,
        ];
        let mut wire: Vec<u8> = frames.iter().flat_map(InputFrame::encode).collect();
        wire.extend(data_frames(&vec![7u8; MAX_DATA + 3]));
        let mut reader = wire.as_slice();
        for frame in &frames {
            assert_eq!(
                InputFrame::read_from(&mut reader).unwrap().as_ref(),
                Some(frame)
            );
        }
        let first = InputFrame::read_from(&mut reader).unwrap().unwrap();
        assert_eq!(first, InputFrame::Data(vec![7u8; MAX_DATA]));
        let second = InputFrame::read_from(&mut reader).unwrap().unwrap();
        assert_eq!(second, InputFrame::Data(vec![7u8; 3]));
        assert!(InputFrame::read_from(&mut reader).unwrap().is_none());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let mut big = vec![DATA];
        big.extend_from_slice(&(MAX_DATA as u32 + 1).to_le_bytes());
        assert!(InputFrame::read_from(&mut big.as_slice()).is_err());
        let unknown = [9u8, 0, 0, 0, 0];
        assert!(InputFrame::read_from(&mut unknown.as_slice()).is_err());
    }

    #[tokio::test]
    async fn a_long_socket_path_is_reached_through_its_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdin.sock");
        let listener = bind(&path).unwrap();
        assert!(path.exists());
        let _client = connect(&path).await.unwrap();
        assert!(listener.accept().is_ok());
    }
}
