//! A bounds-checked reader of SSH wire data (RFC 4251 types), for KRLs: every read
//! either takes the bytes it names from what is left or fails, so no length in the
//! input can make it read past the end or allocate.

use super::KrlError;

pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

const SHORT: KrlError = KrlError::Format("truncated KRL");

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], KrlError> {
        if n > self.rest.len() {
            return Err(SHORT);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KrlError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, KrlError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, KrlError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, KrlError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `string`: a u32 length, then that many bytes.
    pub(super) fn string(&mut self) -> Result<&'a [u8], KrlError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A `string` of exactly `n` bytes (a hash).
    pub(super) fn string_of_len(&mut self, n: usize) -> Result<&'a [u8], KrlError> {
        let s = self.string()?;
        if s.len() != n {
            return Err(KrlError::Format("KRL hash of the wrong length"));
        }
        Ok(s)
    }

    /// A `string` that is text without NUL bytes (sshd's `sshbuf_get_cstring`).
    pub(super) fn cstring(&mut self) -> Result<&'a [u8], KrlError> {
        let s = self.string()?;
        if s.contains(&0) {
            return Err(KrlError::Format("NUL byte in a KRL string"));
        }
        Ok(s)
    }

    /// A non-negative `mpint` of at most `max` significant bytes, as its
    /// big-endian magnitude without leading zeros (sshd refuses negative and
    /// overlong ones).
    pub(super) fn positive_mpint(&mut self, max: usize) -> Result<&'a [u8], KrlError> {
        let s = self.string()?;
        if s.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(KrlError::Format("negative KRL bitmap"));
        }
        if s.len() > max + 1 || (s.len() == max + 1 && s[0] != 0) {
            return Err(KrlError::Format("KRL bitmap too large"));
        }
        let start = s.iter().position(|b| *b != 0).unwrap_or(s.len());
        Ok(&s[start..])
    }
}
