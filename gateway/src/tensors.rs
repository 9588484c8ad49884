//! Tensor-level reads over HTTP: `GET /{org}/{name}/tensors/{rev}/{path}?select=PATTERN` (and
//! `/datasets/{org}/{name}/tensors/...`) answers a safetensors file holding only the tensors
//! the patterns select (`select` repeated for several; `*`, `?` and exact names, see
//! `cairn_artifact::tensor_pattern_matches`), authorized as `resolve` is.
//!
//! The header is read through the ranged-read path (its first
//! [`SAFETENSORS_HEADER_PROBE`](cairn_artifact::SAFETENSORS_HEADER_PROBE) bytes, then the rest of a
//! longer one), checked and turned into the new header and the source ranges to copy; the body
//! is that header and then those ranges, streamed in order: only the chunks of the header and
//! of the selected tensors are fetched, never the whole file. A file that is not safetensors, a
//! header over the limit, a bad pattern or one that selects nothing is a `400` naming the
//! reason, before any body byte. Headers being read hold at most [`TENSOR_HEADER_BYTES_MAX`]
//! bytes in all: a request that finds no room within the stream wait gets `503`.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use cairn_artifact::{
    FileEntry, RecentChunks, SAFETENSORS_HEADER_PROBE, SAFETENSORS_LEN_PREFIX, SafetensorsHeader,
    TENSOR_PATTERNS_MAX, TensorError, check_tensor_patterns, safetensors_header_len,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Error;
use crate::body::stream_parts;
use crate::handlers::{
    ApiError, ApiResult, AppState, ClientAddr, RequestInfo, find_file, kind_of, open_repo,
};
use crate::registry::CommitId;
use crate::source::OpenArtifact;

/// The query parameter naming a tensor or a pattern (repeat it for more).
pub const TENSORS_QUERY_PARAM: &str = "select";
/// Bytes of safetensors headers that tensor reads hold at once in all. At least one header of
/// the largest size allowed fits, so a lone request is never refused for its size.
pub const TENSOR_HEADER_BYTES_MAX: u64 = 256 << 20;
const _: () = assert!(
    TENSOR_HEADER_BYTES_MAX >= cairn_artifact::SAFETENSORS_HEADER_LEN_MAX + 8
        && TENSOR_HEADER_BYTES_MAX <= u32::MAX as u64
);

/// The patterns of a query string: every `select` parameter, in order; refused when there is
/// none or too many (counted as they are read).
pub(crate) fn parse_select(query: Option<&str>) -> Result<Vec<String>, TensorError> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == TENSORS_QUERY_PARAM {
            if out.len() == TENSOR_PATTERNS_MAX {
                return Err(TensorError::TooManyPatterns {
                    count: TENSOR_PATTERNS_MAX + 1,
                });
            }
            out.push(v.into_owned());
        }
    }
    check_tensor_patterns(&out)?;
    Ok(out)
}

/// A refused safetensors file or selection: `400`, naming the file.
fn bad(path: &str, e: TensorError) -> Error {
    let path: String = path.chars().take(200).collect();
    Error::BadRequest(format!("{path}: {e}"))
}

/// Reads exactly `range` of `file` into memory (a header: bounded by the caller).
async fn read_exact(
    st: &AppState,
    art: Arc<dyn OpenArtifact>,
    file: FileEntry,
    range: Range<u64>,
) -> Result<Vec<u8>, Error> {
    // The header's chunk is what every tensor read of this file needs first: worth sharing.
    let res = crate::body::read_exact(&*art, &file, range, &*st.chunks).await;
    if res.is_err() {
        st.metrics.read_errors.inc();
    }
    res
}

/// Room for `len` header bytes among [`TENSOR_HEADER_BYTES_MAX`], waited for at most the
/// stream wait.
async fn header_room(
    sem: &Arc<Semaphore>,
    len: u64,
    wait: std::time::Duration,
) -> Result<OwnedSemaphorePermit, Error> {
    let n = u32::try_from(len.min(TENSOR_HEADER_BYTES_MAX)).expect("bounded by a u32 above");
    tokio::time::timeout(wait, sem.clone().acquire_many_owned(n))
        .await
        .map_err(|_| Error::Busy {
            what: "bytes of safetensors headers being read by this gateway",
            limit: TENSOR_HEADER_BYTES_MAX as usize,
        })
        .map(|p| p.expect("the semaphore is never closed"))
}

/// The handler of both routes.
pub(crate) async fn tensors<const DATASET: bool>(
    State(st): State<Arc<AppState>>,
    method: Method,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    let patterns = parse_select(query.as_deref()).map_err(|e| bad(&path, e))?;
    let info = RequestInfo::from(&headers, client.map(|c| c.0));
    let (_, resolved, art) = open_repo(
        &st,
        kind_of(DATASET),
        &org,
        &name,
        &rev,
        crate::Operation::Read,
        &info,
    )
    .await?;
    let commit = resolved.commit;
    let with_commit = |error: Error| ApiError {
        error,
        commit: Some(commit),
    };
    let a = art.artifact();
    let file = find_file(&a.private.files, &path)
        .ok_or_else(|| {
            with_commit(Error::EntryNotFound {
                what: commit.to_string(),
                path: path.chars().take(200).collect(),
            })
        })?
        .clone();
    let size = file.size;
    // The stream slot is taken before the header is read: reading it holds a thread too.
    let permit = st
        .streams
        .stream(info.client.map(|c| c.ip()))
        .await
        .map_err(with_commit)?;
    let probe = size.min(SAFETENSORS_HEADER_PROBE);
    if size < SAFETENSORS_LEN_PREFIX {
        return Err(with_commit(bad(&path, TensorError::TooShort { size })));
    }
    let mut head = read_exact(&st, art.clone(), file.clone(), 0..probe)
        .await
        .map_err(with_commit)?;
    let json_len = safetensors_header_len(&head, size).map_err(|e| with_commit(bad(&path, e)))?;
    let end = SAFETENSORS_LEN_PREFIX + json_len;
    let room = header_room(&st.tensor_headers, end, st.config.stream_wait)
        .await
        .map_err(with_commit)?;
    if end > probe {
        let rest = read_exact(&st, art.clone(), file.clone(), probe..end)
            .await
            .map_err(with_commit)?;
        head.extend_from_slice(&rest);
    }
    // Parsing up to 100 MB of JSON and matching patterns is CPU work: off the async workers.
    let selected = tokio::task::spawn_blocking(move || {
        let _room = room;
        SafetensorsHeader::parse(&head[SAFETENSORS_LEN_PREFIX as usize..end as usize], size)
            .and_then(|h| h.select(&patterns))
    })
    .await
    .map_err(|e| {
        with_commit(Error::Io {
            what: "reading a safetensors header".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?
    .map_err(|e| with_commit(bad(&path, e)))?;
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, selected.len())
        .header("x-repo-commit", commit.to_string())
        .header("x-cairn-tensors", selected.tensors.len())
        .header(
            header::CACHE_CONTROL,
            if CommitId::parse(&rev).is_some() {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=0, must-revalidate"
            },
        );
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        // The tensors are read once, in order: a chunk two neighbours share is kept between
        // them, and the gateway's cache is looked into but not filled (as for whole files).
        let cache = Arc::new(RecentChunks::new(st.chunks.lookup_only()));
        Body::new(stream_parts(
            art,
            file,
            Bytes::from(selected.header),
            selected.ranges,
            cache,
            st.metrics.clone(),
            permit,
        ))
    };
    Ok(b.body(body)
        .expect("headers built from checked values are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_parameters_are_read_in_order_and_bounded() {
        assert_eq!(
            parse_select(Some("select=layers.0.*&x=1&select=embed%2Ew")).unwrap(),
            ["layers.0.*", "embed.w"]
        );
        assert_eq!(parse_select(None).unwrap_err(), TensorError::NoPatterns);
        assert_eq!(
            parse_select(Some("tensor=a")).unwrap_err(),
            TensorError::NoPatterns
        );
        assert!(matches!(
            parse_select(Some("select=")),
            Err(TensorError::BadPattern { .. })
        ));
        let many: String = (0..=TENSOR_PATTERNS_MAX)
            .map(|i| format!("select=t{i}&"))
            .collect();
        let e = parse_select(Some(&many)).unwrap_err();
        assert!(e.to_string().contains("over the limit of 256"), "{e}");
        assert_eq!(bad("m.safetensors", e).http().status, 400);
    }
}
