//! Paths: `/`-separated, absolute or not (both start at the root), names of 1..=255 bytes.
//!
//! * Empty components (`a//b`, a trailing `/`) are ignored.
//! * `.` is the directory itself; `..` its parent (the root's parent is the root). Both may
//!   appear anywhere while walking, but never as the *last* component of a path that names
//!   something to create, remove or rename: that is [`Error::InvalidPath`].
//! * A NUL byte anywhere is `InvalidPath`; a component over 255 bytes is `NameTooLong`.
//!
//! Paths are walked as bytes: `/` is ASCII, so a split at it is a split of the `str` too,
//! and byte loops link none of the `str` pattern machinery.

use crate::error::{Error, Result};
use crate::wire::items::NAME_MAX;

/// Iterate the meaningful components of `path` (skipping empty ones), checking each.
pub fn components(mut path: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    core::iter::from_fn(move || {
        while let [b'/', rest @ ..] = path {
            path = rest;
        }
        if path.is_empty() {
            return None;
        }
        let end = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
        let (c, rest) = path.split_at_checked(end)?;
        path = rest;
        Some(check_component(c))
    })
}

// A byte loop rather than `contains` (which links `memchr`: 112 more bytes of Thumb code).
#[allow(clippy::manual_contains)]
fn check_component(c: &[u8]) -> Result<&[u8]> {
    if c.len() > NAME_MAX {
        Err(Error::NameTooLong)
    } else if c.iter().any(|&b| b == 0) {
        Err(Error::InvalidPath)
    } else {
        Ok(c)
    }
}

/// Split `path` into the directory part and the last name, which must be a real name.
pub fn split_last(path: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut trimmed = path;
    while let [rest @ .., b'/'] = trimmed {
        trimmed = rest;
    }
    let mut dir: &[u8] = &[];
    let mut name = trimmed;
    let mut i = trimmed.len();
    while i > 0 {
        i -= 1;
        if let (Some(b'/'), Some(d), Some(n)) =
            (trimmed.get(i), trimmed.get(..i), trimmed.get(i + 1..))
        {
            dir = d;
            name = n;
            break;
        }
    }
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Error::InvalidPath);
    }
    Ok((dir, check_component(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn components_and_last() {
        let c: Vec<_> = components(b"/a//b/./c/").map(|c| c.unwrap()).collect();
        assert_eq!(c, [&b"a"[..], b"b", b".", b"c"]);
        let s = |p: &'static str| split_last(p.as_bytes());
        assert_eq!(s("/a/b/c").unwrap(), (&b"/a/b"[..], &b"c"[..]));
        assert_eq!(s("c").unwrap(), (&b""[..], &b"c"[..]));
        assert_eq!(s("/c/").unwrap(), (&b""[..], &b"c"[..]));
        assert_eq!(s("/"), Err(Error::InvalidPath));
        assert_eq!(s("a/.."), Err(Error::InvalidPath));
        assert_eq!(s("a\0b"), Err(Error::InvalidPath));
        let long = "x".repeat(256);
        assert_eq!(split_last(long.as_bytes()), Err(Error::NameTooLong));
        assert!(split_last(&long.as_bytes()[..255]).is_ok());
    }
}
