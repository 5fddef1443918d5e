//! A WebSocket to the daemon (`GET /v1/runs/{id}/attach`), over TCP or
//! the daemon's Unix socket, with the session key.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

use super::{Client, ClientError};
use secrecy::ExposeSecret;

/// A connection to the daemon, TCP or Unix.
pub(crate) trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A WebSocket to the daemon.
pub(crate) type DaemonSocket = WebSocketStream<Box<dyn Connection>>;

impl Client {
    /// Opens a WebSocket to `path` (with its query).
    pub(crate) async fn websocket(&self, path: &str) -> Result<DaemonSocket, ClientError> {
        let protocol = |detail: String| ClientError::Protocol {
            url: self.url.clone(),
            detail,
        };
        let (connection, url): (Box<dyn Connection>, String) = match self.url.strip_prefix("unix:")
        {
            Some(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| protocol(format!("cannot connect: {e}")))?;
                (Box::new(stream), format!("ws://localhost{path}"))
            }
            None => {
                let parsed =
                    reqwest::Url::parse(&self.base).map_err(|e| protocol(e.to_string()))?;
                if parsed.scheme() != "http" {
                    return Err(protocol(
                        "attach speaks WebSocket over http:// or unix: only".to_owned(),
                    ));
                }
                let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
                let port = parsed.port_or_known_default().unwrap_or(80);
                let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| protocol(format!("cannot connect: {e}")))?;
                let _ = stream.set_nodelay(true);
                (Box::new(stream), format!("ws://{host}:{port}{path}"))
            }
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| protocol(e.to_string()))?;
        if let Some(key) = &self.key {
            let value = key.expose_secret().parse().map_err(|_| {
                ClientError::Usage("the session key is not a valid header value".into())
            })?;
            request.headers_mut().insert("x-session-api-key", value);
        }
        match tokio_tungstenite::client_async(request, connection).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let body = res.body().as_deref().unwrap_or_default();
                let text = String::from_utf8_lossy(body);
                Err(protocol(format!(
                    "attach refused: HTTP {}: {text}",
                    res.status()
                )))
            }
            Err(err) => Err(protocol(format!("attach failed: {err}"))),
        }
    }
}
