//! `GET /v1/files` (download, with `Range` and `ETag`), `GET
//! /v1/files/stat`, `GET /v1/files/list` and `GET /v1/runs/{run_id}/files`.
//! Wire types live here; the reading is in [`crate::files`]. A file is
//! streamed from its descriptor in 64 KiB chunks, never read whole.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery};
use super::runs::check_run_id;
use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::files::range::{self, Wanted};
use crate::files::{Compression, EntryKind, FilesError, Meta, OpenedFile, MAX_LIST_LIMIT};

/// Chunk size of a download.
const CHUNK: usize = 64 * 1024;

/// Default page of a listing.
const DEFAULT_LIST_LIMIT: usize = 100;

/// Query naming one path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// Absolute path, under a readable root (`--upload-root`, `--read-root`).
    pub path: String,
}

/// Query of `GET /v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Absolute path, under a readable root (`--upload-root`, `--read-root`).
    pub path: String,
    /// A directory's archive: `tar.gz` (the default) or `tar.zst`; without
    /// it, `Accept-Encoding` naming `zstd` (and not `gzip`) picks tar.zst.
    pub format: Option<ArchiveFormat>,
}

/// How a directory is archived.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum ArchiveFormat {
    /// tar, gzip-compressed.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// tar, zstd-compressed.
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// The compression a download asked for, by `format` or else by
/// `Accept-Encoding`.
fn compression_of(format: Option<ArchiveFormat>, headers: &HeaderMap) -> Compression {
    match format {
        Some(ArchiveFormat::TarGz) => Compression::Gzip,
        Some(ArchiveFormat::TarZst) => Compression::Zstd,
        None => {
            let accepted = headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>();
            let names = |name: &str| accepted.iter().any(|a| a == name);
            if names("zstd") && !names("gzip") {
                Compression::Zstd
            } else {
                Compression::Gzip
            }
        }
    }
}

/// Query of `GET /v1/runs/{run_id}/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFileQuery {
    /// Path relative to the run's work dir.
    pub path: String,
}

/// Query of `GET /v1/files/list`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Absolute path of a directory, under a readable root.
    pub path: String,
    /// Entries per page (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only entries whose names sort after this one (the previous page's `next`).
    pub after: Option<String>,
}

/// One entry of a directory, or the answer of a stat.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    /// The last component of the path.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    /// Last modification (RFC 3339).
    pub mtime: chrono::DateTime<chrono::Utc>,
    /// A symlink's target as stored (symlinks are never followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A page of a directory listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListingView {
    /// Entries sorted by name.
    pub entries: Vec<EntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Download a file: streamed, with a single `Range` (206; 416 when
/// unsatisfiable), `ETag` and `Last-Modified`, and `If-None-Match` (304).
/// A directory streams as a tar.gz (or tar.zst: `format=tar.zst`, or
/// `Accept-Encoding: zstd`) built on the fly.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(DownloadQuery),
    responses((status = 200, description = "the file (octet-stream), or a directory as a tar.gz (application/gzip) or tar.zst (application/zstd)",
               content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/gzip"), (Vec<u8> = "application/zstd"))),
              (status = 206, description = "the asked range", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 304, description = "If-None-Match matched the ETag"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 416, description = "no byte of the file is in the range", body = ErrorBody)))]
pub async fn get_file(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let files = state.files.clone();
    let path = query.path.clone();
    let opened = blocking(move || files.open(&path)).await;
    match opened {
        Err(ApiError::Files(FilesError::WrongKind { what, .. }))
            if what.starts_with("is a directory") =>
        {
            let compression = compression_of(query.format, &headers);
            archive(&state, &query.path, compression).await
        }
        opened => download(opened?, &headers).await,
    }
}

/// A directory as a compressed tar, streamed as it is built.
async fn archive(
    state: &AppState,
    path: &str,
    compression: Compression,
) -> Result<Response, ApiError> {
    let files = state.files.clone();
    let path = path.to_owned();
    let chunks = blocking(move || files.archive(&path, compression)).await?;
    let stream = tokio_stream_from(chunks);
    let headers = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static(compression.content_type()),
    )];
    Ok((StatusCode::OK, headers, Body::from_stream(stream)).into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Download a file of a run's work dir; a run's own token may call it.
#[utoipa::path(get, path = "/v1/runs/{run_id}/files", tag = "files", params(("run_id" = String, Path), RunFileQuery),
    responses((status = 200, description = "the file", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 206, description = "the asked range", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 304, description = "If-None-Match matched the ETag"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 416, description = "no byte of the file is in the range", body = ErrorBody)))]
pub async fn get_run_file(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RunFileQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_run_id(&run_id)?;
    let files = state.files.clone();
    let opened = blocking(move || files.open_in_run(&run_id, &query.path)).await?;
    download(opened, &headers).await
}

/// Describe one path (a symlink is described, not followed).
#[utoipa::path(get, path = "/v1/files/stat", tag = "files", params(PathQuery),
    responses((status = 200, body = EntryView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn stat_file(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> Result<Json<EntryView>, ApiError> {
    let files = state.files.clone();
    let meta = blocking(move || files.stat(&query.path)).await?;
    Ok(Json(entry_view(meta)))
}

/// List a directory, a page at a time, sorted by name.
#[utoipa::path(get, path = "/v1/files/list", tag = "files", params(ListQuery),
    responses((status = 200, body = ListingView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn list_files(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListingView>, ApiError> {
    let files = state.files.clone();
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(FilesError::Invalid(format!(
            "limit {limit} must be between 1 and {MAX_LIST_LIMIT}"
        ))
        .into());
    }
    let listing = blocking(move || files.list(&query.path, query.after.as_deref(), limit)).await?;
    Ok(Json(ListingView {
        entries: listing.entries.into_iter().map(entry_view).collect(),
        next: listing.next,
    }))
}

pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::Internal(format!("a file task failed: {err}")))?
        .map_err(ApiError::from)
}

/// The answer to a download: 304, 416, 206 or 200 with a streamed body.
async fn download(opened: OpenedFile, headers: &HeaderMap) -> Result<Response, ApiError> {
    let OpenedFile { file, meta } = opened;
    let etag = meta.etag();
    let last_modified = httpdate::fmt_http_date(meta.mtime);
    let mut common = HeaderMap::new();
    common.insert(header::ETAG, value(&etag));
    common.insert(header::LAST_MODIFIED, value(&last_modified));
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if if_none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let size = meta.size;
    let (status, start, len) = match range::parse(asked, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part { start, end } => {
            let range = format!("bytes {start}-{end}/{size}");
            common.insert(header::CONTENT_RANGE, value(&range));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Wanted::Unsatisfiable => {
            common.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            let err = ApiError::RangeNotSatisfiable { size };
            return Ok((common, err).into_response());
        }
    };
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|err| ApiError::Internal(format!("seeking in {}: {err}", meta.name)))?;
    }
    common.insert(header::CONTENT_LENGTH, value(&len.to_string()));
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), CHUNK));
    Ok((status, common, body).into_response())
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn entry_view(meta: Meta) -> EntryView {
    EntryView {
        kind: match meta.kind {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        },
        size: meta.size,
        mode: format!("{:04o}", meta.mode),
        mtime: meta.mtime.into(),
        target: meta.target,
        name: meta.name,
    }
}
