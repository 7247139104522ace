//! Packing an entry's strings into the buffer glibc hands to a `*_r` call.

use std::ffi::c_char;

/// Why an entry could not be packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackError {
    /// The caller's buffer is too small: `ERANGE`, the caller retries with a larger one.
    TooSmall,
    /// The entry cannot be a C string (an interior NUL; the cache parser refuses those).
    Invalid,
}

/// glibc's buffer: strings and pointer arrays are written into it front to back; the pointers
/// handed out are derived from glibc's own pointer (`base`), which outlives this value.
#[derive(Debug)]
pub(crate) struct Buffer<'a> {
    base: *mut c_char,
    bytes: &'a mut [u8],
    used: usize,
}

impl<'a> Buffer<'a> {
    /// # Safety
    /// `base` is null or valid for writes of `len` bytes, and nothing else reads or writes
    /// those bytes for `'a`.
    pub(crate) unsafe fn from_raw(base: *mut c_char, len: usize) -> Option<Self> {
        if base.is_null() {
            return None;
        }
        // SAFETY: non-null, and valid and exclusive for `len` bytes for 'a by the contract.
        let bytes = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
        Some(Self {
            base,
            bytes,
            used: 0,
        })
    }

    /// Reserve `len` bytes aligned to `align`; their offset.
    fn reserve(&mut self, len: usize, align: usize) -> Result<usize, PackError> {
        let addr = (self.base as usize)
            .checked_add(self.used)
            .ok_or(PackError::TooSmall)?;
        let pad = addr.next_multiple_of(align) - addr;
        let start = self.used.checked_add(pad).ok_or(PackError::TooSmall)?;
        let end = start.checked_add(len).ok_or(PackError::TooSmall)?;
        if end > self.bytes.len() {
            return Err(PackError::TooSmall);
        }
        self.used = end;
        Ok(start)
    }

    /// Copy `s` with a terminating NUL; a pointer to it.
    pub(crate) fn put_str(&mut self, s: &str) -> Result<*mut c_char, PackError> {
        if s.as_bytes().contains(&0) {
            return Err(PackError::Invalid);
        }
        let start = self.reserve(s.len() + 1, 1)?;
        self.bytes[start..start + s.len()].copy_from_slice(s.as_bytes());
        self.bytes[start + s.len()] = 0;
        Ok(self.base.wrapping_add(start))
    }

    /// A NULL-terminated array of `ptrs`, aligned for pointers; a pointer to it.
    pub(crate) fn put_ptr_array(
        &mut self,
        ptrs: &[*mut c_char],
    ) -> Result<*mut *mut c_char, PackError> {
        let size = size_of::<*mut c_char>();
        let len = ptrs
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_mul(size))
            .ok_or(PackError::TooSmall)?;
        let start = self.reserve(len, align_of::<*mut c_char>())?;
        let terminated = ptrs.iter().copied().chain([std::ptr::null_mut()]);
        for (slot, ptr) in self.bytes[start..start + len]
            .chunks_exact_mut(size)
            .zip(terminated)
        {
            slot.copy_from_slice(&(ptr as usize).to_ne_bytes());
        }
        Ok(self.base.wrapping_add(start).cast::<*mut c_char>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn packs_strings_and_an_aligned_pointer_array() -> Result<(), String> {
        let mut storage = [0u8; 64];
        let base = storage.as_mut_ptr().wrapping_add(1).cast::<c_char>();
        // SAFETY: 63 writable bytes of `storage`, used only through `buf` below.
        let mut buf = unsafe { Buffer::from_raw(base, 63) }.ok_or("null buffer")?;
        let e = |e: PackError| format!("{e:?}");
        let a = buf.put_str("alice").map_err(e)?;
        let b = buf.put_str("bob").map_err(e)?;
        let array = buf.put_ptr_array(&[a, b]).map_err(e)?;
        assert_eq!(array as usize % align_of::<*mut c_char>(), 0);
        // SAFETY: the array and strings were just written into `storage`, still alive.
        unsafe {
            assert_eq!(CStr::from_ptr(*array).to_bytes(), b"alice");
            assert_eq!(CStr::from_ptr(*array.add(1)).to_bytes(), b"bob");
            assert!((*array.add(2)).is_null());
        }
        Ok(())
    }

    #[test]
    fn too_small_and_invalid() -> Result<(), String> {
        let mut storage = [0u8; 8];
        // SAFETY: 8 writable bytes of `storage`, used only through `buf`.
        let mut buf =
            unsafe { Buffer::from_raw(storage.as_mut_ptr().cast(), 8) }.ok_or("null buffer")?;
        assert_eq!(buf.put_str("12345678"), Err(PackError::TooSmall));
        assert_eq!(buf.put_str("a\0b"), Err(PackError::Invalid));
        assert!(buf.put_str("1234567").is_ok());
        assert_eq!(buf.put_ptr_array(&[]), Err(PackError::TooSmall));
        // SAFETY: a null buffer is refused before any access.
        assert!(unsafe { Buffer::from_raw(std::ptr::null_mut(), 8) }.is_none());
        Ok(())
    }
}
