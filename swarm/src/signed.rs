//! What the signed formats (holder records, audit receipts, leases) share: the message a
//! signature covers and a bounds-checked reader of their bytes.

use crate::error::{Error, Result};

/// The bytes an ed25519 signature covers: a format's context string, then the body. The
/// context keeps a signature of one format from passing for a signature of another.
pub(crate) fn signed_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + body.len());
    message.extend_from_slice(context);
    message.extend_from_slice(body);
    message
}

/// A cursor over bytes whose every read fails cleanly at the end, with the error of the format
/// being read.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    invalid: fn(String) -> Error,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], invalid: fn(String) -> Error) -> Self {
        Self { bytes, invalid }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err((self.invalid)("bytes end early".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}
