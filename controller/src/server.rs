//! The artifact HTTP server (spec §10.4, architecture §7).
//!
//! Only `GET`/`HEAD /externalartifact/<ns>/<name>/<file>.tar.gz` is served, plus `GET /` for probes.
//! This is a small handler of our own rather than tower-http's `ServeDir`, because `ServeDir` follows
//! symlinks and serves every file under its root, while storage must never serve through a symlink nor
//! expose `.lock` or temporary files. Files are opened through a cap-std [`Dir`], so no request can
//! reach outside the storage root either.

use std::future::{Future, IntoFuture as _};
use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use artgen_engine::store::{KIND_DIR, is_artifact_file_name};
use artgen_engine::validate::{is_dns1123_label, is_dns1123_subdomain};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;

/// How long open connections may finish after shutdown is requested (§10.4).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const CONTENT_TYPE: &str = "application/gzip";
const CHUNK: usize = 64 * 1024;

/// Serves the storage at `root` on `listener` until `shutdown` completes, then lets open requests
/// finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    root: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let dir = tokio::task::spawn_blocking(move || Dir::open_ambient_dir(&root, ambient_authority()))
        .await
        .map_err(io::Error::other)??;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(dir)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        res = server.into_future() => res,
        () = async {
            // A dropped sender means the server already returned: wait for that branch instead.
            if stopping_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("artifact server: connections still open after the shutdown grace period");
            Ok(())
        }
    }
}

/// The routes, over an opened storage root.
pub fn router(root: Dir) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/externalartifact/{namespace}/{name}/{file}", get(artifact))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(Arc::new(root))
}

async fn artifact(
    State(root): State<Arc<Dir>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name, file))) = path else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !(is_dns1123_label(&namespace) && is_dns1123_subdomain(&name) && is_artifact_file_name(&file)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let opened = tokio::task::spawn_blocking(move || open_artifact(&root, &namespace, &name, &file)).await;
    let (file, len, mtime) = match opened {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) if is_not_found(&e) => return StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "artifact server: cannot open artifact");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "artifact server: open task failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    respond(file, len, mtime, &method, &headers).await
}

/// Opens `externalartifact/<ns>/<name>/<file>` if every component is what storage creates — real
/// directories and a regular file, no symlinks. `None` means "not an artifact".
fn open_artifact(
    root: &Dir,
    namespace: &str,
    name: &str,
    file: &str,
) -> io::Result<Option<(std::fs::File, u64, SystemTime)>> {
    let mut dir = root.try_clone()?;
    for seg in [KIND_DIR, namespace, name] {
        if !dir.symlink_metadata(seg)?.is_dir() {
            return Ok(None);
        }
        dir = dir.open_dir(seg)?;
    }
    let seen = dir.symlink_metadata(file)?;
    if !seen.is_file() {
        return Ok(None);
    }
    let f = dir.open(file)?;
    let meta = f.metadata()?;
    // A symlink swapped in between lstat and open would show up as a different inode.
    if !meta.is_file() || meta.dev() != seen.dev() || meta.ino() != seen.ino() {
        return Ok(None);
    }
    Ok(Some((f.into_std(), meta.len(), meta.modified()?.into_std())))
}

fn is_not_found(e: &io::Error) -> bool {
    // cap-std reports an attempt to leave the root as PermissionDenied: for a client that is "missing".
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied
    )
}

/// What the `Range` header asks for, against a file of a given length.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Full,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range (RFC 9110 §14.1.2). Multiple ranges and syntax we do not understand fall
/// back to the full body, which the RFC allows.
fn parse_range(value: &str, len: u64) -> Range {
    let Some((first, last)) = value
        .strip_prefix("bytes=")
        .and_then(|s| s.trim().split_once('-'))
    else {
        return Range::Full;
    };
    if last.contains(',') {
        return Range::Full;
    }
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(_) if len == 0 => Range::Unsatisfiable,
            Ok(n) => Range::Part(len.saturating_sub(n), len - 1),
            Err(_) => Range::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Range::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Range::Full,
        }
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end.min(len - 1))
}

/// HTTP dates have second precision: compare whole seconds.
fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn respond(
    file: std::fs::File,
    len: u64,
    mtime: SystemTime,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let last_modified = httpdate::fmt_http_date(mtime);
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        out.insert(header::LAST_MODIFIED, v);
    }

    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(since) = header_str(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok())
        && whole_seconds(mtime) <= whole_seconds(since)
    {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }

    // If-Range with a different date means the client's partial copy is stale: send everything.
    let range_applies = header_str(header::IF_RANGE).is_none_or(|v| v == last_modified);
    let range = match header_str(header::RANGE) {
        Some(v) if range_applies => parse_range(v, len),
        _ => Range::Full,
    };
    let (status, start, count) = match range {
        Range::Full => (StatusCode::OK, 0, len),
        Range::Part(start, end) => {
            let content_range = format!("bytes {start}-{end}/{len}");
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("ASCII"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Range::Unsatisfiable => {
            let content_range = format!("bytes */{len}");
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("ASCII"),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
        }
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD {
        return (status, out).into_response();
    }

    let mut file = tokio::fs::File::from_std(file);
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        tracing::warn!(error = %e, "artifact server: seek failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(count), CHUNK));
    (status, out, body).into_response()
}

/// Serves `/metrics` on `metrics` and `/healthz` + `/readyz` on `health` until `shutdown`. Ready means the
/// watch caches have synced and the storage accepts writes.
pub async fn serve_probes(
    metrics: TcpListener,
    health: TcpListener,
    registry: crate::metrics::Metrics,
    state: crate::controller::Health,
    storage: artgen_engine::store::Storage,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    registry.render(),
                )
            }
        }),
    );
    let health_app = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let (state, root) = (state.clone(), storage.root().to_owned());
            async move {
                let writable = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&root).is_ok())
                    .await
                    .unwrap_or(false);
                match (state.is_ready(), writable) {
                    (true, true) => (StatusCode::OK, "ok"),
                    (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced"),
                    (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "storage not writable"),
                }
            }
        }),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let m = axum::serve(metrics, metrics_app).with_graceful_shutdown(stop());
    let h = axum::serve(health, health_app).with_graceful_shutdown(stop());
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let (a, b) = tokio::join!(m.into_future(), h.into_future());
    a.and(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let cases = [
            ("bytes=0-9", 100, Range::Part(0, 9)),
            ("bytes=90-", 100, Range::Part(90, 99)),
            ("bytes=90-1000", 100, Range::Part(90, 99)),
            ("bytes=-10", 100, Range::Part(90, 99)),
            ("bytes=-1000", 100, Range::Part(0, 99)),
            ("bytes=100-", 100, Range::Unsatisfiable),
            ("bytes=-0", 100, Range::Unsatisfiable),
            ("bytes=0-", 0, Range::Unsatisfiable),
            ("bytes=5-1", 100, Range::Full),
            ("bytes=0-1,5-6", 100, Range::Full),
            ("items=0-1", 100, Range::Full),
            ("bytes=x-1", 100, Range::Full),
            ("bytes=", 100, Range::Full),
        ];
        for (value, len, want) in cases {
            assert_eq!(parse_range(value, len), want, "{value} of {len}");
        }
    }
}
