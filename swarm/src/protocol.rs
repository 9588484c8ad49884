//! The shard protocol, ALPN `/cairn/shard/1`: its specification, limits and frame codec.
//!
//! # Participants
//!
//! A *client* (a publisher placing shards, a reader or repairer fetching them, an owner
//! deleting them) and a *server* (a storage node that serves a [`ShardBackend`]). Both are iroh
//! endpoints, so every connection is authenticated by the ed25519 endpoint id of each side: the
//! server knows who is asking without any signature inside the protocol.
//!
//! # Goals
//!
//! - Be paranoid about data integrity. A shard is named by its CID (CIDv1, codec raw 0x55,
//!   multihash BLAKE3 0x1e, 32-byte digest) and the digest is checked by the server before it
//!   commits a PUT, by the server before it serves a whole shard, and by the client on every
//!   whole-shard GET reply. Bad bytes from a peer are an error naming the peer and the CID.
//! - Put a limit on everything: every length on the wire is checked against a named maximum
//!   before anything is allocated, every request and connect has a timeout, the number of
//!   requests in flight per peer is bounded on both sides.
//! - Only the endpoint that PUT a shard may DELETE it.
//! - Never panic on input: a malformed or oversized frame gets an error reply and the stream is
//!   closed; the connection and the node keep serving.
//!
//! # Non-goals
//!
//! - Streaming shards larger than [`SHARD_LEN_MAX`]: shards are the output of erasure coding a
//!   chunk of at most a few MiB, so one frame holds one shard.
//! - Verifying byte ranges on the client: a range reply is only length-checked; the storage proof
//!   protocol (BLAKE3/bao slices) is the place for verified ranges.
//! - Confidentiality of the shard bytes: they are already sealed (AES-256-GCM) above this layer;
//!   QUIC encrypts the transport.
//!
//! # Framing
//!
//! One request per bidirectional QUIC stream. The client opens the stream, writes the request,
//! finishes its send side; the server writes one reply and finishes. All integers are
//! big-endian. A CID is encoded as `u8 len` (1..=[`CID_LEN_MAX`]) followed by its binary form.
//!
//! Request:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version, [`PROTOCOL_VERSION`] = 1 |
//! | 1 | 1 | request type: 0 PUT, 1 GET, 2 HAS, 3 DELETE; 4..=255 reserved |
//! | 2 | … | body |
//!
//! - PUT: `cid`, `u32 len` (≤ [`SHARD_LEN_MAX`]), `len` shard bytes.
//! - GET: `cid`, `u8 has_range` (0 or 1), then if 1: `u64 start`, `u64 end` (exclusive,
//!   `start <= end`, `end - start <= SHARD_LEN_MAX`). A range past the end of the shard is
//!   clamped to it.
//! - HAS: `u16 count` (1..=[`HAS_BATCH_MAX`]), then `count` CIDs.
//! - DELETE: `cid`.
//!
//! Nothing may follow the body; trailing bytes make the request malformed.
//!
//! Reply:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version |
//! | 1 | 1 | status (below) |
//! | 2 | … | body |
//!
//! Status 0 OK, body by request type:
//! - PUT: empty (the shard is committed).
//! - GET: `u32 len` (≤ [`SHARD_LEN_MAX`]), `len` bytes.
//! - HAS: `u16 count` (equal to the request's), `count` bytes each 0 (not held) or 1 (held).
//! - DELETE: `u8 deleted`: 1 if the requester's copy was removed, 0 if the shard was not held.
//!
//! Status 1 NOT_FOUND (GET of a shard not held): empty body.
//!
//! Every other status is an error with body `u16 len` (≤ `MESSAGE_LEN_MAX` = 1024) and a UTF-8
//! message; status 8 QUOTA_FULL puts `u64 needed`, `u64 free` before the message.
//! 2 MALFORMED, 3 UNSUPPORTED_VERSION, 4 UNSUPPORTED_REQUEST, 5 TOO_LARGE, 6 CID_MISMATCH (PUT
//! bytes do not hash to the CID), 7 INVALID_CID (not a shard CID), 8 QUOTA_FULL, 9 NOT_OWNER,
//! 10 CORRUPTED (the server's stored copy failed verification), 11 INTERNAL (backend I/O).
//! Statuses 12..=255 are reserved.
//!
//! # Limits and timeouts
//!
//! The server reads, handles and answers one request within [`REQUEST_TIMEOUT`], then resets the
//! stream; the client applies [`CONNECT_TIMEOUT`] to connecting and [`REQUEST_TIMEOUT`] to each
//! request. At most [`PEER_INFLIGHT_MAX`] requests per connection are handled at once by the
//! server and at most as many per peer are sent by a client.
//!
//! # Cancellation
//!
//! Dropping a client request future resets its stream; the server notices at its next read or
//! write. A PUT whose bytes were fully received may still be committed after the client gave up:
//! shards are content-addressed, so a later retry of the same PUT is harmless. A DELETE likewise
//! may or may not have happened; repeating it returns `deleted = 0` or `NOT_OWNER`.
//!
//! [`ShardBackend`]: crate::ShardBackend

use std::io;
use std::ops::Range;
use std::time::Duration;

use cid::Cid;
use tokio::io::{AsyncRead, AsyncReadExt};

/// ALPN of the shard protocol; the trailing number is its major version.
pub const SHARD_ALPN: &[u8] = b"/cairn/shard/1";
/// Version byte at the start of every request and reply.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest shard accepted on the wire, in bytes.
pub const SHARD_LEN_MAX: u32 = 8 * 1024 * 1024;
/// Largest encoded CID accepted on the wire, in bytes.
pub const CID_LEN_MAX: usize = 64;
/// Most CIDs in one HAS request.
pub const HAS_BATCH_MAX: usize = 1024;
/// Longest error message in a reply, in bytes.
pub(crate) const MESSAGE_LEN_MAX: usize = 1024;
/// Time allowed to establish a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one request, from opening its stream to the end of the reply. 8 MiB at a
/// slow 1 MB/s takes 8 s, so 30 s leaves room without letting a stalled peer hold a slot long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per peer, on either side.
pub const PEER_INFLIGHT_MAX: usize = 16;
/// Peers whose connections a client keeps open at once.
pub const POOL_PEERS_MAX: usize = 256;

// A CIDv1 raw BLAKE3 is 36 bytes; the cap leaves room for other hashes without inviting abuse.
const _: () = assert!(CID_LEN_MAX >= 36 && CID_LEN_MAX <= u8::MAX as usize);
const _: () = assert!(HAS_BATCH_MAX <= u16::MAX as usize);
const _: () = assert!(MESSAGE_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(CONNECT_TIMEOUT.as_millis() < REQUEST_TIMEOUT.as_millis());

/// Request type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Put = 0,
    Get = 1,
    Has = 2,
    Delete = 3,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Put => "PUT",
            Kind::Get => "GET",
            Kind::Has => "HAS",
            Kind::Delete => "DELETE",
        }
    }
}

/// Reply status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    Malformed = 2,
    UnsupportedVersion = 3,
    UnsupportedRequest = 4,
    TooLarge = 5,
    CidMismatch = 6,
    InvalidCid = 7,
    QuotaFull = 8,
    NotOwner = 9,
    Corrupted = 10,
    Internal = 11,
}

impl Status {
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Malformed,
            3 => Status::UnsupportedVersion,
            4 => Status::UnsupportedRequest,
            5 => Status::TooLarge,
            6 => Status::CidMismatch,
            7 => Status::InvalidCid,
            8 => Status::QuotaFull,
            9 => Status::NotOwner,
            10 => Status::Corrupted,
            11 => Status::Internal,
            _ => return None,
        })
    }
}

/// A request up to (not including) the PUT payload, so that the server can refuse an oversized
/// or over-quota PUT before receiving its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    Put { cid: Cid, len: u32 },
    Get { cid: Cid, range: Option<Range<u64>> },
    Has { cids: Vec<Cid> },
    Delete { cid: Cid },
}

/// A reply as decoded by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Stored,
    Data(Vec<u8>),
    NotFound,
    Has(Vec<bool>),
    Deleted(bool),
    Error {
        status: u8,
        quota: Option<(u64, u64)>,
        message: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream failed (reset, connection lost); nothing can be answered.
    Io(io::Error),
    /// The bytes break the protocol; answered with this status if the stream still works.
    Bad(Status, String),
}

impl FrameError {
    pub(crate) fn describe(&self) -> String {
        match self {
            FrameError::Io(err) => err.to_string(),
            FrameError::Bad(_, message) => message.clone(),
        }
    }
}

fn bad(status: Status, message: impl Into<String>) -> FrameError {
    FrameError::Bad(status, message.into())
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            bad(Status::Malformed, "frame ends early")
        } else {
            FrameError::Io(err)
        }
    }
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    // Shard CIDs are 36 bytes; callers check longer ones with `cid_fits` before encoding.
    assert!(
        bytes.len() <= CID_LEN_MAX,
        "CID longer than CID_LEN_MAX reached the encoder"
    );
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

/// Encodes a request head; a PUT's `len` shard bytes follow it on the stream.
pub(crate) fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    match head {
        Head::Put { cid, len } => {
            out.push(Kind::Put as u8);
            put_cid(&mut out, cid);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::Get { cid, range } => {
            out.push(Kind::Get as u8);
            put_cid(&mut out, cid);
            match range {
                None => out.push(0),
                Some(range) => {
                    out.push(1);
                    out.extend_from_slice(&range.start.to_be_bytes());
                    out.extend_from_slice(&range.end.to_be_bytes());
                }
            }
        }
        Head::Has { cids } => {
            out.push(Kind::Has as u8);
            assert!(
                cids.len() <= HAS_BATCH_MAX,
                "HAS batch over HAS_BATCH_MAX reached the encoder"
            );
            out.extend_from_slice(&(cids.len() as u16).to_be_bytes());
            for cid in cids {
                put_cid(&mut out, cid);
            }
        }
        Head::Delete { cid } => {
            out.push(Kind::Delete as u8);
            put_cid(&mut out, cid);
        }
    }
    out
}

async fn read_cid<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Cid, FrameError> {
    let len = recv.read_u8().await? as usize;
    if len == 0 || len > CID_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("CID length {len} is outside 1..={CID_LEN_MAX}"),
        ));
    }
    let mut buf = [0u8; CID_LEN_MAX];
    recv.read_exact(&mut buf[..len]).await?;
    let cid = Cid::read_bytes(&buf[..len])
        .map_err(|err| bad(Status::InvalidCid, format!("CID bytes do not parse: {err}")))?;
    if cid.encoded_len() != len {
        return Err(bad(
            Status::Malformed,
            "CID length prefix does not match the CID",
        ));
    }
    Ok(cid)
}

/// Reads exactly `len` bytes, `len` having been checked against its limit by the caller.
async fn read_vec<R: AsyncRead + Unpin>(recv: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    Ok(buf)
}

fn check_shard_len(len: u32, what: &str) -> Result<(), FrameError> {
    if len > SHARD_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("{what} length {len} is over the limit of {SHARD_LEN_MAX}"),
        ));
    }
    Ok(())
}

/// Reads the version, type and body of a request, except a PUT's payload.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Head, FrameError> {
    let version = recv.read_u8().await?;
    if version != PROTOCOL_VERSION {
        return Err(bad(
            Status::UnsupportedVersion,
            format!("protocol version {version} is not supported, expected {PROTOCOL_VERSION}"),
        ));
    }
    let kind = recv.read_u8().await?;
    Ok(match kind {
        0 => {
            let cid = read_cid(recv).await?;
            let len = recv.read_u32().await?;
            check_shard_len(len, "shard")?;
            Head::Put { cid, len }
        }
        1 => {
            let cid = read_cid(recv).await?;
            let range = match recv.read_u8().await? {
                0 => None,
                1 => {
                    let start = recv.read_u64().await?;
                    let end = recv.read_u64().await?;
                    if start > end {
                        return Err(bad(
                            Status::Malformed,
                            format!("range start {start} is after end {end}"),
                        ));
                    }
                    if end - start > u64::from(SHARD_LEN_MAX) {
                        return Err(bad(
                            Status::TooLarge,
                            format!(
                                "range length {} is over the limit of {SHARD_LEN_MAX}",
                                end - start
                            ),
                        ));
                    }
                    Some(start..end)
                }
                flag => {
                    return Err(bad(
                        Status::Malformed,
                        format!("range flag {flag} is not 0 or 1"),
                    ));
                }
            };
            Head::Get { cid, range }
        }
        2 => {
            let count = recv.read_u16().await? as usize;
            if count == 0 || count > HAS_BATCH_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("HAS batch of {count} is outside 1..={HAS_BATCH_MAX}"),
                ));
            }
            let mut cids = Vec::with_capacity(count);
            for _ in 0..count {
                cids.push(read_cid(recv).await?);
            }
            Head::Has { cids }
        }
        3 => Head::Delete {
            cid: read_cid(recv).await?,
        },
        other => {
            return Err(bad(
                Status::UnsupportedRequest,
                format!("request type {other} is reserved"),
            ));
        }
    })
}

/// Reads a PUT payload of a length already checked by [`read_head`].
pub(crate) async fn read_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_shard_len(len, "shard")?;
    read_vec(recv, len as usize).await
}

/// Checks that the sender finished its side right after the frame.
pub(crate) async fn read_end<R: AsyncRead + Unpin>(recv: &mut R) -> Result<(), FrameError> {
    let mut probe = [0u8; 1];
    match recv.read(&mut probe).await? {
        0 => Ok(()),
        _ => Err(bad(Status::Malformed, "bytes follow the end of the frame")),
    }
}

/// Encodes a successful reply's header and body (for GET, the data follows: see
/// [`encode_data_head`]).
pub(crate) fn encode_ok(body: &[u8]) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION, Status::Ok as u8];
    out.extend_from_slice(body);
    out
}

/// Header of a GET reply carrying `len` bytes.
pub(crate) fn encode_data_head(len: u32) -> Vec<u8> {
    encode_ok(&len.to_be_bytes())
}

/// The reply to a GET of a shard not held.
pub(crate) fn encode_not_found() -> Vec<u8> {
    vec![PROTOCOL_VERSION, Status::NotFound as u8]
}

/// Encodes an error reply, truncating the message to `MESSAGE_LEN_MAX` at a char boundary.
pub(crate) fn encode_error(status: Status, quota: Option<(u64, u64)>, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MESSAGE_LEN_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message.as_bytes()[..end];
    let mut out = vec![PROTOCOL_VERSION, status as u8];
    if let Some((needed, free)) = quota {
        out.extend_from_slice(&needed.to_be_bytes());
        out.extend_from_slice(&free.to_be_bytes());
    }
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Reads the reply to a request of type `kind`; `has_count` is the HAS batch length asked for.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    recv: &mut R,
    kind: Kind,
    has_count: usize,
) -> Result<Reply, FrameError> {
    let version = recv.read_u8().await?;
    if version != PROTOCOL_VERSION {
        return Err(bad(
            Status::UnsupportedVersion,
            format!("reply version {version}, expected {PROTOCOL_VERSION}"),
        ));
    }
    let status_byte = recv.read_u8().await?;
    let Some(status) = Status::from_byte(status_byte) else {
        return Err(bad(
            Status::Malformed,
            format!("reply status {status_byte} is reserved"),
        ));
    };
    let reply = match (status, kind) {
        (Status::Ok, Kind::Put) => Reply::Stored,
        (Status::Ok, Kind::Get) => {
            let len = recv.read_u32().await?;
            check_shard_len(len, "reply")?;
            Reply::Data(read_vec(recv, len as usize).await?)
        }
        (Status::Ok, Kind::Has) => {
            let count = recv.read_u16().await? as usize;
            if count != has_count {
                return Err(bad(
                    Status::Malformed,
                    format!("HAS reply has {count} answers for {has_count} CIDs"),
                ));
            }
            let flags = read_vec(recv, count).await?;
            let mut held = Vec::with_capacity(count);
            for flag in flags {
                match flag {
                    0 => held.push(false),
                    1 => held.push(true),
                    other => {
                        return Err(bad(
                            Status::Malformed,
                            format!("HAS answer {other} is not 0 or 1"),
                        ));
                    }
                }
            }
            Reply::Has(held)
        }
        (Status::Ok, Kind::Delete) => match recv.read_u8().await? {
            0 => Reply::Deleted(false),
            1 => Reply::Deleted(true),
            other => {
                return Err(bad(
                    Status::Malformed,
                    format!("DELETE answer {other} is not 0 or 1"),
                ));
            }
        },
        (Status::NotFound, Kind::Get) => Reply::NotFound,
        (Status::NotFound, _) => {
            return Err(bad(
                Status::Malformed,
                format!("NOT_FOUND is no answer to {}", kind.name()),
            ));
        }
        (status, _) => {
            let quota = if status == Status::QuotaFull {
                Some((recv.read_u64().await?, recv.read_u64().await?))
            } else {
                None
            };
            let len = recv.read_u16().await? as usize;
            if len > MESSAGE_LEN_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("error message of {len} bytes is over {MESSAGE_LEN_MAX}"),
                ));
            }
            let message = String::from_utf8_lossy(&read_vec(recv, len).await?).into_owned();
            Reply::Error {
                status: status as u8,
                quota,
                message,
            }
        }
    };
    read_end(recv).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::shard_cid;

    async fn decode(bytes: &[u8]) -> Result<Head, FrameError> {
        let mut reader = bytes;
        let head = read_head(&mut reader).await?;
        Ok(head)
    }

    #[tokio::test]
    async fn heads_round_trip() {
        let cid = shard_cid(b"abc");
        let heads = [
            Head::Put { cid, len: 3 },
            Head::Get { cid, range: None },
            Head::Get {
                cid,
                range: Some(1..2),
            },
            Head::Has {
                cids: vec![cid, shard_cid(b"d")],
            },
            Head::Delete { cid },
        ];
        for head in heads {
            assert_eq!(decode(&encode_head(&head)).await.unwrap(), head);
        }
    }

    #[tokio::test]
    async fn limits_are_checked_before_allocation() {
        let cid = shard_cid(b"abc");
        let mut put = encode_head(&Head::Put { cid, len: 0 });
        let n = put.len();
        put[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&put).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let has = [PROTOCOL_VERSION, Kind::Has as u8, 0xff, 0xff];
        assert!(matches!(
            decode(&has).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let long_cid = [PROTOCOL_VERSION, Kind::Delete as u8, 200];
        assert!(matches!(
            decode(&long_cid).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let reserved = [PROTOCOL_VERSION, 9];
        assert!(matches!(
            decode(&reserved).await,
            Err(FrameError::Bad(Status::UnsupportedRequest, _))
        ));

        let version = [2, 0];
        assert!(matches!(
            decode(&version).await,
            Err(FrameError::Bad(Status::UnsupportedVersion, _))
        ));

        let truncated = &encode_head(&Head::Delete { cid })[..10];
        assert!(matches!(
            decode(truncated).await,
            Err(FrameError::Bad(Status::Malformed, _))
        ));

        let mut backwards = encode_head(&Head::Get {
            cid,
            range: Some(5..6),
        });
        let n = backwards.len();
        backwards[n - 8..].copy_from_slice(&1u64.to_be_bytes());
        assert!(matches!(
            decode(&backwards).await,
            Err(FrameError::Bad(Status::Malformed, _))
        ));
    }

    #[tokio::test]
    async fn error_replies_round_trip_and_truncate() {
        let long = "é".repeat(MESSAGE_LEN_MAX);
        let bytes = encode_error(Status::QuotaFull, Some((10, 3)), &long);
        let mut reader = &bytes[..];
        let Reply::Error {
            status,
            quota,
            message,
        } = read_reply(&mut reader, Kind::Put, 0).await.unwrap()
        else {
            panic!("expected an error reply");
        };
        assert_eq!(status, Status::QuotaFull as u8);
        assert_eq!(quota, Some((10, 3)));
        assert_eq!(message.len(), MESSAGE_LEN_MAX);
    }
}
