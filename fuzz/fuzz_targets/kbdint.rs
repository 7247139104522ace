//! Keyboard-interactive token entry (`token::entry::TokenEntry`, used by sshd-gsi and
//! pam_hpccert) on a sequence of answers.
//!
//! Input: byte 0 sets the limit (`max_bytes = 4 * byte`, 0..=1020, small so that the fuzzer
//! reaches it), the rest is the answers separated by NUL bytes; each answer is turned into text
//! as sshd-gsi does (`String::from_utf8_lossy`) and fed to `TokenEntry::answer`.
//!
//! Checked against a model of the documented scheme (an answer is trimmed of its line end; a
//! trailing `\` means "more follows"; the parts, trimmed, are joined):
//! - `answer` never panics;
//! - `Ask(n)` only after an answer ending in `\`, with n = the next part's number, while the
//!   joined parts are within the limit, and never more parts than `max/64 + 2` (so a client
//!   that always says "more" is cut off: the PAM loop ends);
//! - `Done(token)` only after an answer without `\`, and the token is exactly the joined parts,
//!   never longer than the limit, in at most `max/64 + 2` parts;
//! - a sequence whose joined parts exceed the limit ends in `TooLong` at that answer, never in a
//!   token (whole, cut or partial); `TooLong` only when over the limit or over the part count;
//! - after `Done` or `TooLong` the entry starts a new token.
#![no_main]

use hpccert_core::token::entry::{Next, TokenEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(m) * 4;
    let max_parts = max / 64 + 2;
    let mut entry = TokenEntry::default();
    // the model: the current token's joined parts and their number
    let mut joined: Vec<u8> = Vec::new();
    let mut parts = 0usize;
    for raw in rest.split(|&b| b == 0) {
        let answer = String::from_utf8_lossy(raw);
        let next = entry.answer(&answer, max);

        let text = answer.trim_end_matches(['\r', '\n']);
        let (piece, more) = match text.strip_suffix('\\') {
            Some(p) => (p.trim(), true),
            None => (text.trim(), false),
        };
        joined.extend_from_slice(piece.as_bytes());
        parts += 1;
        let over = joined.len() > max;
        match next {
            Next::Ask(n) => {
                assert!(more, "Ask({n}) after a last part {answer:?}");
                assert!(!over, "Ask({n}) with {} bytes joined, max {max}", joined.len());
                assert_eq!(n, parts + 1, "part numbers");
                assert!(parts <= max_parts, "{parts} parts, max {max}");
            }
            Next::Done(token) => {
                assert!(!more, "Done after {answer:?}, which asks for more");
                assert!(!over, "a token over the limit: {} bytes joined, max {max}", joined.len());
                assert!(token.len() <= max, "token of {} bytes, max {max}", token.len());
                assert!(parts <= max_parts, "a token in {parts} parts, max {max}");
                assert_eq!(token.as_bytes(), &joined[..], "the token is not the joined parts");
                joined.clear();
                parts = 0;
            }
            Next::TooLong => {
                assert!(
                    over || parts > max_parts,
                    "TooLong with {} bytes in {parts} parts, max {max}",
                    joined.len()
                );
                joined.clear();
                parts = 0;
            }
        }
    }
});
