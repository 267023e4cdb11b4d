//! Paths: `/`-separated, absolute or not (both start at the root), names of 1..=255 bytes.
//!
//! * Empty components (`a//b`, a trailing `/`) are ignored.
//! * `.` is the directory itself; `..` its parent (the root's parent is the root). Both may
//!   appear anywhere while walking, but never as the *last* component of a path that names
//!   something to create, remove or rename: that is [`Error::InvalidPath`].
//! * A NUL byte anywhere is `InvalidPath`; a component over 255 bytes is `NameTooLong`.

use crate::error::{Error, Result};
use crate::wire::items::NAME_MAX;

/// Iterate the meaningful components of `path` (skipping empty ones), checking each.
pub fn components(path: &str) -> impl Iterator<Item = Result<&str>> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(check_component)
}

fn check_component(c: &str) -> Result<&str> {
    if c.len() > NAME_MAX {
        Err(Error::NameTooLong)
    } else if c.as_bytes().contains(&0) {
        Err(Error::InvalidPath)
    } else {
        Ok(c)
    }
}

/// Split `path` into the directory part and the last name, which must be a real name.
pub fn split_last(path: &str) -> Result<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    // `rsplit_once` rather than slicing at `rfind`: no char-boundary check (and its panic
    // path) is linked for a split at an ASCII byte.
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
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
        let c: Vec<_> = components("/a//b/./c/").map(|c| c.unwrap()).collect();
        assert_eq!(c, ["a", "b", ".", "c"]);
        assert_eq!(split_last("/a/b/c").unwrap(), ("/a/b", "c"));
        assert_eq!(split_last("c").unwrap(), ("", "c"));
        assert_eq!(split_last("/c/").unwrap(), ("", "c"));
        assert_eq!(split_last("/"), Err(Error::InvalidPath));
        assert_eq!(split_last("a/.."), Err(Error::InvalidPath));
        assert_eq!(split_last("a\0b"), Err(Error::InvalidPath));
        let long = "x".repeat(256);
        assert_eq!(split_last(&long), Err(Error::NameTooLong));
        assert!(split_last(&long[..255]).is_ok());
    }
}
