//! A short, fixed-capacity text for failure messages: the suite runs without an allocator,
//! yet a failure should read like a sentence ("read at lba 4095: byte 17 differs ...").

use core::fmt;

/// Bytes a [`Message`] can hold; longer text is cut at a character boundary.
pub const MESSAGE_CAPACITY: usize = 160;

/// A failure message formatted into a fixed buffer (no allocation).
///
/// Print it with `{}` or take [`Message::as_str`] (e.g. for `defmt`'s `{=str}` or a UART).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Message {
    bytes: [u8; MESSAGE_CAPACITY],
    len: usize,
}

impl Message {
    /// An empty message.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MESSAGE_CAPACITY],
            len: 0,
        }
    }

    /// A message holding `args`, formatted and cut to [`MESSAGE_CAPACITY`] bytes.
    pub fn format(args: fmt::Arguments<'_>) -> Self {
        let mut m = Self::new();
        // Writing into a `Message` never fails: it truncates instead.
        let _ = fmt::write(&mut m, args);
        m
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..self.len).unwrap_or(&[]);
        // Only whole characters are ever copied in, so this is always valid UTF-8.
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MESSAGE_CAPACITY.saturating_sub(self.len);
        let mut n = s.len().min(room);
        while n > 0 && !s.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(dst), Some(src)) = (
            self.bytes.get_mut(self.len..self.len + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        Ok(())
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_truncates_at_a_char_boundary() {
        let m = Message::format(format_args!("lba {} byte {:#x}", 7, 255));
        assert_eq!(m.as_str(), "lba 7 byte 0xff");
        let long = Message::format(format_args!("{:é<200}", ""));
        assert!(long.as_str().len() <= MESSAGE_CAPACITY);
        assert_eq!(long.as_str().len(), MESSAGE_CAPACITY); // 'é' is 2 bytes, 160 is even
        assert!(long.as_str().chars().all(|c| c == 'é'));
    }
}
