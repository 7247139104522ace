//! Entering a token in parts, for clients that cut every answer at 1023 bytes (stock
//! OpenSSH): an answer that ends with `\` means "more follows", and the front end asks again
//! with "Access token (part N): ". A JWT never contains `\`. sshd-gsi (keyboard-interactive)
//! and pam_hpccert (the PAM conversation) use the same scheme; the shipped `hpccert-askpass`
//! answers it.

use std::fmt;

/// A secret (a token or an answer): never printed, wiped when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        // keep the zeroing from being optimised away as a dead store
        std::hint::black_box(&self.0);
    }
}

/// Joins the answers of a token sent in parts (an answer ending in `\` means more follows).
#[derive(Debug, Default)]
pub struct TokenEntry {
    token: Secret,
    parts: usize,
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask for part N (2, 3, ...).
    Ask(usize),
    /// The whole token.
    Done(Secret),
    /// Longer than the limit, or more parts than a token of that size needs.
    TooLong,
}

impl TokenEntry {
    /// Take one answer.
    pub fn answer(&mut self, text: &str, max_bytes: usize) -> Next {
        let text = text.trim_end_matches(['\r', '\n']);
        let (piece, more) = match text.strip_suffix('\\') {
            Some(p) => (p.trim(), true),
            None => (text.trim(), false),
        };
        if self.token.0.capacity() == 0 {
            // one allocation for the whole token, so no copy is left behind unwiped
            self.token
                .0
                .reserve_exact(max_bytes.saturating_add(1).min(1 << 20));
        }
        self.token.0.extend_from_slice(piece.as_bytes());
        self.parts += 1;
        if self.token.len() > max_bytes || self.parts > max_bytes / 64 + 2 {
            *self = Self::default();
            return Next::TooLong;
        }
        if more {
            Next::Ask(self.parts + 1)
        } else {
            Next::Done(std::mem::take(self).token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_prompts_join_parts() {
        let mut e = TokenEntry::default();
        assert_eq!(e.answer("aaa.bbb\\", 16384), Next::Ask(2));
        assert_eq!(e.answer("ccc\\\n", 16384), Next::Ask(3));
        assert_eq!(
            e.answer("ddd.sig", 16384),
            Next::Done(Secret::from("aaa.bbbcccddd.sig"))
        );
        // the entry starts over after a complete token
        assert_eq!(e.answer("x.y.z", 16384), Next::Done(Secret::from("x.y.z")));
        // a bounded total
        let mut e = TokenEntry::default();
        let chunk = format!("{}\\", "a".repeat(1000));
        let last = (0..20)
            .map(|_| e.answer(&chunk, 16384))
            .find(|n| *n == Next::TooLong);
        assert_eq!(last, Some(Next::TooLong));
        assert_eq!(format!("{:?}", Secret::from("tok")), "<secret>");
    }
}
